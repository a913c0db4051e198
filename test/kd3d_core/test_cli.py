import subprocess
import sys

from kd3d_core.cli import COMMANDS, build_parser, main


def test_help_lists_every_command():
    text = build_parser().format_help()
    for name in COMMANDS:
        assert name in text


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "kd3d_core", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("kd3d ")
