"""`python -m helpline.emulator`: serve the emulator (or `simulate-call`) without the helpline CLI group."""

from .cli import main

main()
