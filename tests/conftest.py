"""Shared test setup: GPU tests run only where CUDA is present; the fixture checkouts are built once a session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from runnable_wan import RunnableRepo, make_runnable_repo
from wanrepo import FoundingStory, fetch_wan22_wheel, make_founding_story_repo, make_official_checkout


def _cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def story(tmp_path_factory: pytest.TempPathFactory) -> FoundingStory:
    """The founding story's app repo; tests only read it (test_git_compare checks nothing changed)."""
    return make_founding_story_repo(tmp_path_factory.mktemp("story"))


@pytest.fixture(scope="session")
def official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official wan package from the wan22 wheel, with a generate-like entry."""
    wheel = fetch_wan22_wheel()
    if wheel is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the wan22 wheel is not cached and cannot be downloaded: CI must test the official code")
        pytest.skip("the wan22 wheel is not cached and cannot be downloaded")
    return make_official_checkout(wheel, tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="session")
def runnable(tmp_path_factory: pytest.TempPathFactory) -> RunnableRepo:
    """A Wan-like checkout that runs the official WanModel and UniPC solver, with a history of regressions.
    Tests that check out another commit clone it first (``checkout_at``)."""
    pytest.importorskip("diffusers", reason="the official Wan model code needs diffusers")
    wheel = fetch_wan22_wheel()
    if wheel is None:
        pytest.skip("the wan22 wheel is not cached and cannot be downloaded")
    return make_runnable_repo(wheel, tmp_path_factory.mktemp("runnable"))


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp folder for ``tempfile``, so a test can see that nothing was left in it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp
