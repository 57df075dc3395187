from __future__ import annotations

import argparse

import pytest

from streams.settings import Settings, add_arguments, from_args, from_env, to_env


def test_env_then_flags() -> None:
    env = {"EDITSTREAM_SAMPLES": "7", "EDITSTREAM_BAND_LOW": "0.1",
           "EDITSTREAM_REQUIRE_OPEN_SOURCE": "false",
           "EDITSTREAM_DISABLED_GLOBS": "**/*.pem, **/x"}
    s = from_env(env)
    assert (s.samples, s.band_low, s.require_open_source) == (7, 0.1, False)
    assert s.disabled_globs == ("**/*.pem", "**/x")
    p = argparse.ArgumentParser()
    add_arguments(p)
    s2 = from_args(p.parse_args(["--samples", "9"]), env)
    assert s2.samples == 9 and s2.band_low == 0.1


def test_round_trip_through_env() -> None:
    s = Settings(samples=3, disabled_globs=("a", "b"), require_open_source=False)
    assert from_env(to_env(s)) == s


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="EDITSTREAM_SAMPLES"):
        from_env({"EDITSTREAM_SAMPLES": "many"})
