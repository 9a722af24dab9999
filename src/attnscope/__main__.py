"""`python -m attnscope ...` (and `torchrun -m attnscope train ...`)."""

from attnscope.cli import main

main()
