"""``python -m rap``: the same as the ``rap`` command (handy under torchrun or accelerate launch)."""

from rap.cli import main

main()
