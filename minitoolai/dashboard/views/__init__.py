"""The dashboard's pages, one module per area; `minitoolai.dashboard.routes` mounts them."""
