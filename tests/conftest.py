import pytest

from stage_scripts import run_smoke_pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """One smoke run of every stage, shared by the end-to-end and bad-input tests."""
    return run_smoke_pipeline(tmp_path_factory.mktemp("pipeline"))
