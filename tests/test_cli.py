"""The command line as a whole: fast help, and the tables it spells out agree with the library."""

import subprocess
import sys

from magicvideo.cli import build_parser, init_from_sd as cli_init_from_sd


def test_building_the_parser_imports_neither_torch_nor_diffusers():
    code = ("import sys; from magicvideo.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_spelled_out_names_equal_the_library_tables():
    from magicvideo.sampling import SCHEDULERS
    from magicvideo.models.temporal_attention import TEMPORAL_ATTENTION_MODES

    assert cli_init_from_sd.TEMPORAL_ATTENTION_MODES == TEMPORAL_ATTENTION_MODES
    assert sorted(cli_init_from_sd.SCHEDULERS) == sorted(SCHEDULERS)


def test_eval_digits_is_digits_eval():
    parser = build_parser()
    top = vars(parser.parse_args(["eval-digits", "--model", "m", "--limit", "5"]))
    nested = vars(parser.parse_args(["digits", "eval", "--model", "m", "--limit", "5"]))
    assert top.pop("command") == "eval-digits" and nested.pop("command") == "digits"
    assert nested.pop("digits_command") == "eval"
    assert top == nested
