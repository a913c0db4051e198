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


def test_no_depth_correction_reaches_both_dust3r_teachers_configs(tmp_path):
    from kd3d_core.commands import distill, teach

    (tmp_path / "info.txt").write_text("")  # what makes a folder a scene for `kd3d distill`
    parser = build_parser()
    s = str(tmp_path)
    for argv, module in ((["teach", s, "--teacher", "simulated-dust3r"], teach),
                         (["distill", s, "--out", str(tmp_path / "m.kd3d"), "--teacher", "simulated-dust3r"], distill)):
        on = module.build_config(parser.parse_args(argv))
        off = module.build_config(parser.parse_args(argv + ["--no-depth-correction"]))
        on, off = (getattr(c, "teach", c) for c in (on, off))
        assert on.dust3r.align.depth_correction is not None
        assert off.dust3r.align.depth_correction is None
