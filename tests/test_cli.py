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


def test_loading_without_gc_pauses_the_collector_and_freezes_what_was_loaded():
    import gc

    import pytest

    from magicvideo.cli import loading_without_gc

    class Loaded:  # objects in a reference cycle, as module and class objects are
        def __init__(self):
            self.me = self

    frozen_before, was_enabled = gc.get_freeze_count(), gc.isenabled()
    try:
        gc.enable()
        with loading_without_gc():
            assert not gc.isenabled()
            loaded = [Loaded() for _ in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(loaded)  # no longer scanned by collections
        with pytest.raises(RuntimeError), loading_without_gc():
            raise RuntimeError("a failed import")
        assert gc.isenabled()
        gc.disable()  # a caller that had paused the collector keeps it paused
        with loading_without_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        (gc.enable if was_enabled else gc.disable)()
