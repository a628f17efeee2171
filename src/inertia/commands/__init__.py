"""One module per ``inertia`` subcommand: each defines ``add_parser(subparsers)`` and ``run(args) -> int``."""
