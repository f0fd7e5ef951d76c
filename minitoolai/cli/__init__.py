"""The `minitoolai` command line, one module per command group."""
