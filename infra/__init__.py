"""How the real parts run: the embedded Tansu broker launcher and the compose file."""
