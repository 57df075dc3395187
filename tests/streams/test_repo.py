"""Repository identity: every spelling of one repository gives one key, others stay apart."""

from __future__ import annotations

import pytest

from streams.emit import split_for
from streams.repo import record_unit, repo_key, split_unit

SAME = [
    "https://github.com/a/b",
    "https://github.com/A/b.git",
    "git@github.com:a/b.git",
    "git@github.com:/a/b.git",
    "ssh://git@github.com/a/b",
    "ssh://git@github.com:22/a/b.git",
    "git+ssh://git@github.com/a/b",
    "git://github.com/a/b.git",
    "http://GitHub.com/a/b/",
    "https://www.github.com/a/b/",
    "https://user:ghp_secret@github.com/a/b.git",
    "https://github.com:443/a/b",
    "https://github.com//a//b//",
    "https://github.com/a/b?tab=readme#top",
    "https://github.com/a/b/tree/main/src",  # a web page of the same repository
    "github.com/a/b",
    "  https://github.com/a/b  ",
]


@pytest.mark.parametrize("url", SAME)
def test_spellings_of_one_repository_share_a_key(url: str) -> None:
    assert repo_key(url) == "github.com/a/b"


def test_other_repositories_and_hosts_stay_apart() -> None:
    keys = [repo_key(u) for u in ("https://github.com/a/b", "https://github.com/a/c",
                                  "https://github.com/b/a", "https://gitlab.com/a/b",
                                  "https://gitlab.com/a/b/c")]
    assert len(set(keys)) == len(keys)


def test_nested_groups_keep_their_whole_path() -> None:
    assert repo_key("git@gitlab.example.org:Group/Sub/Proj.git") == \
        "gitlab.example.org/group/sub/proj"
    assert repo_key("https://oauth2:glpat-x@gitlab.example.org/group/sub/proj") == \
        "gitlab.example.org/group/sub/proj"


def test_no_credentials_survive() -> None:
    for url in ("https://user:hunter2@github.com/a/b", "https://ghp_tok123@github.com/a/b",
                "ssh://deploy:pw@git.example.com:2222/x/y.git"):
        key = repo_key(url)
        assert key is not None and "hunter2" not in key and "tok123" not in key
        assert "@" not in key and ":" not in key


@pytest.mark.parametrize("url", [None, "", "   ", "https://github.com/", "https://github.com"])
def test_no_repository(url: str | None) -> None:
    assert repo_key(url) is None


def test_local_paths_get_an_opaque_stable_key() -> None:
    key = repo_key("/home/alice/src/proj")
    assert key is not None and key.startswith("local:") and "alice" not in key
    assert repo_key("file:///home/alice/src/proj") == key
    assert repo_key(r"C:\Users\bob\proj").startswith("local:")  # type: ignore[union-attr]
    assert repo_key("/home/alice/src/other") != key


def test_split_unit_falls_back_to_the_session() -> None:
    assert split_unit({"repo_url": "git@github.com:a/b.git", "session_id": "s"}) == \
        "github.com/a/b"
    assert split_unit({"repo_url": None, "session_id": "s1"}) == "session:s1"
    assert record_unit({"provenance": {"repo": "github.com/a/b"}}) == "github.com/a/b"
    # records written before provenance had `repo`
    assert record_unit({"provenance": {"repo_url": "https://github.com/A/b.git"}}) == \
        "github.com/a/b"
    assert record_unit({"provenance": {"session_id": "s2"}}) == "session:s2"


def test_every_spelling_lands_in_the_same_split() -> None:
    for i in range(100):
        spellings = [f"https://github.com/o/r{i}", f"https://github.com/O/r{i}.git",
                     f"git@github.com:o/r{i}.git"]
        splits = {split_for({"repo_url": u, "session_id": f"s{j}"}, 0.3)
                  for j, u in enumerate(spellings)}
        assert len(splits) == 1
