"""One module per ``inertia`` subcommand, each with ``add_parser(subparsers)`` (returning its parser) and
``run(args) -> int``; :mod:`.options` holds the options, readers and formats they share."""
