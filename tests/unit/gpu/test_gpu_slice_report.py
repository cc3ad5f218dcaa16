"""The pod-side progress reporter: runs the real slice-run child and reports finished slices."""

from __future__ import annotations

import json

import pytest

from edgeweave.gpu import slice_report

SPEC = {"kernel": {"builtin": "saxpy", "problemSize": 4096}, "grid": [16], "block": [256]}


def test_reports_every_finished_slice_and_passes_the_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("EDGEWEAVE_GPUJOB", json.dumps(SPEC))
    monkeypatch.setenv("EDGEWEAVE_SLICES", "v1;blocks=2;total=16;slices=2-4,6")
    sent: list[str] = []
    rc = slice_report.main(["--report-interval", "0", "--", "--backend", "cpu", "--verify"], patcher=sent.append)
    assert rc == 0
    assert sent[-1] == "2-4,6" and sent == ["2", "2-3", "2-4", "2-4,6"]
    assert '"verified": true' in capsys.readouterr().out


def test_throttled_reports_still_send_the_final_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWEAVE_GPUJOB", json.dumps(SPEC))
    monkeypatch.setenv("EDGEWEAVE_SLICES", "v1;blocks=2;total=16;slices=0-7")
    sent: list[str] = []
    assert slice_report.main(["--report-interval", "3600", "--", "--backend", "cpu"], patcher=sent.append) == 0
    assert sent == ["0", "0-7"]  # the first at once, then only the final flush


def test_a_failing_patch_never_stops_the_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWEAVE_GPUJOB", json.dumps(SPEC))
    monkeypatch.setenv("EDGEWEAVE_SLICES", "v1;blocks=4;total=16;slices=0-3")

    def broken(_: str) -> None:
        raise PermissionError("403 pods is forbidden")

    assert slice_report.main(["--", "--backend", "cpu"], patcher=broken) == 0


def test_bad_input_exit_code_comes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWEAVE_GPUJOB", json.dumps(SPEC))
    monkeypatch.setenv("EDGEWEAVE_SLICES", "v1;blocks=4;total=16;slices=9")
    sent: list[str] = []
    assert slice_report.main(["--", "--backend", "cpu"], patcher=sent.append) == 2
    assert sent == []
