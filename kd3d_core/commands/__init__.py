"""One module per `kd3d` subcommand; see kd3d_core.cli."""
