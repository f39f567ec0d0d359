"""One-line errors keep their reason (issue 24, item 7): a wrapped exception's first line alone
often says nothing ("Error in call to target ...:", TorchScript's "The following operation
failed in the TorchScript interpreter.")."""

from __future__ import annotations

from dfkd_cli.errors import reason


def test_the_reason_is_one_line_with_what_follows_a_bare_first_line():
    hydra = RuntimeError("Error in call to target 'torch.nn.modules.linear.Linear':\n"
                         "TypeError(\"Linear.__init__() got an unexpected keyword 'widht'\")")
    assert reason(hydra) == ("Error in call to target 'torch.nn.modules.linear.Linear': ... "
                             "TypeError(\"Linear.__init__() got an unexpected keyword 'widht'\")")
    script = RuntimeError("The following operation failed in the TorchScript interpreter.\n"
                          "Traceback of TorchScript (most recent call last):\n  File x, line 3\n"
                          "RuntimeError: mat1 and mat2 shapes cannot be multiplied (7x3 and 5x8)")
    assert reason(script).endswith("mat1 and mat2 shapes cannot be multiplied (7x3 and 5x8)")
    assert "\n" not in reason(script) and reason(ValueError("one line")) == "one line"
    assert reason(KeyError()) == "KeyError"


def test_the_reason_keeps_the_cause_and_stays_short():
    try:
        try:
            raise OSError("disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("could not save") from inner
    except RuntimeError as exc:
        assert reason(exc) == "could not save ... disk quota exceeded"
    assert len(reason(ValueError("x" * 1000))) == 400
