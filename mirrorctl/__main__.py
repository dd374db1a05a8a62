"""``python -m mirrorctl`` runs the CLI, like the installed ``mirrorctl`` script."""

from mirrorctl.cli import main

main()
