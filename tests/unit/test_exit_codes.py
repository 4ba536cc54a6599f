"""The processing script's exit code, from its files' outcomes: the truth without a job record,
and 0 with one, whose file results carry the failures (so the good outputs get uploaded)."""

import pytest

from shardflow.contract import ExitCode
from shardflow.core.record import ErrorKind
from shardflow.processing.messages import FileOutcome
from shardflow.processing.script import exit_code

GOOD = FileOutcome("part-0000.parquet", 10, output="part-0000.parquet", rows=5)
BAD = FileOutcome("broken.parquet", 10, error="ArrowInvalid: not parquet", error_kind=ErrorKind.INPUT)


@pytest.mark.parametrize(
    ("outcomes", "alone", "recorded"),
    [
        ([GOOD, GOOD], ExitCode.OK, ExitCode.OK),
        ([GOOD, BAD], ExitCode.SOME_FILES_FAILED, ExitCode.OK),
        ([BAD, BAD], ExitCode.ALL_FILES_FAILED, ExitCode.OK),
    ],
    ids=["all-good", "some-failed", "all-failed"],
)
def test_exit_code_says_what_the_files_did_unless_a_job_record_holds_it(outcomes, alone, recorded):
    assert exit_code(outcomes, recorded=False) is alone
    assert exit_code(outcomes, recorded=True) is recorded


def test_exit_codes_are_distinct_and_each_has_a_meaning():
    assert [int(code) for code in ExitCode] == [0, 2, 3, 4, 5]
    assert len({code.meaning for code in ExitCode}) == len(ExitCode)
