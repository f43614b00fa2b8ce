import pytest

from ldm import runtime
from stage_scripts import run_smoke_pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """One smoke run of every stage, shared by the end-to-end and bad-input tests."""
    return run_smoke_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(autouse=True)
def full_precision():
    """Tests in this process compute in fp32 on every CPU, so that a tolerance means the same on
    a CPU with native bf16 (where the default policy is bf16) as on one without; tests of bf16
    ask for it. Scripts run as subprocesses keep the default, as users get it."""
    with runtime.precision_policy("fp32"):
        yield


@pytest.fixture
def default_precision():
    """For a test that compares the library with what a script computed: the precision scripts
    run at by default (auto), as the Python API's default is."""
    with runtime.precision_policy("auto"):
        yield
