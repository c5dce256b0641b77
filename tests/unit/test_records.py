"""dlaasd.records: what the database's JSON columns hold, typed."""

from __future__ import annotations

from dlaasd.records import Outcome, StagingFigures


def test_an_outcome_survives_its_column():
    out = Outcome("FAILED", "timed out", "C203", 137)
    assert Outcome.from_json(out.to_json()) == out


def test_an_older_outcome_without_codes_reads():
    assert Outcome.from_json({"status": "COMPLETED", "message": "done"}) == Outcome(
        "COMPLETED", "done"
    )


def test_staging_figures_default_to_zero_and_ignore_unknown_keys():
    figures = StagingFigures.from_json({"bytes_downloaded": 5, "from_the_future": 1})
    assert figures == StagingFigures(bytes_downloaded=5)
    assert StagingFigures.from_json(None) == StagingFigures()
    assert set(figures.to_json()) == {
        "bytes_downloaded",
        "files_downloaded",
        "cache_hits",
        "download_seconds",
        "bytes_uploaded",
        "files_uploaded",
        "upload_seconds",
    }
