"""Shared fixtures: small data made in-process, the smoke experiment, the project root."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sublevel import config, datasets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def smoke_config() -> dict:
    return config.load(ROOT / "config" / "smoke.yaml")


@pytest.fixture(scope="session")
def mnist1d_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "mnist1d.zarr"
    datasets.prepare("mnist1d", out, mnist1d_samples=600)
    return out


@pytest.fixture(scope="session")
def mnist1d(mnist1d_store):
    return datasets.load(mnist1d_store)


def make_experiment(**overrides):
    """The smoke experiment with overrides, validated through the real schema."""
    with open(ROOT / "config" / "smoke.yaml") as f:
        raw = yaml.safe_load(f)
    exp = raw["experiments"]["smoke"]
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        if leaf:
            exp.setdefault(section, {})[leaf] = value
        elif value is None:  # drop a section
            exp.pop(section, None)
        else:
            exp[section] = value
    return config.experiment(config.validate(raw), "smoke")
