"""Speech engines: local ones run in-process (eSpeak NG, Piper) and turn text into 16-bit
mono PCM; the upstream one forwards to an OpenAI-compatible server and passes its bytes on."""
