"""The token helpers have one name: ``pushcore.mint_token`` / ``pushcore.verify_token`` (issue 10, item 10d).

``pushcore.tokens.mint`` / ``pushcore.tokens.verify`` remain only as deprecated
aliases that warn, and nothing in the package, the docs, the examples or the
tests uses them (besides this test).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import pushcore
from pushcore import tokens

SECRET = b"token-names-secret-0123456789abc"
NOW = 1_700_000_000.0
ROOT = Path(__file__).resolve().parent.parent


def test_one_definition_under_the_public_name():
    assert pushcore.mint_token is tokens.mint_token
    assert pushcore.verify_token is tokens.verify_token
    assert tokens.mint_token.__name__ == "mint_token" and tokens.verify_token.__name__ == "verify_token"
    assert {"mint_token", "verify_token"} <= set(tokens.__all__)
    assert not {"mint", "verify"} & set(tokens.__all__)  # the old names are not advertised


def test_mint_token_and_verify_token_round_trip_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = pushcore.mint_token(SECRET, "phone-1", ttl=60, now=NOW)
        assert pushcore.verify_token(SECRET, "phone-1", token, now=NOW).device_id == "phone-1"


def test_the_old_names_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match=r"pushcore\.tokens\.mint is deprecated.*pushcore\.mint_token"):
        token = tokens.mint(SECRET, "phone-1", ttl=60, now=NOW)
    assert token == pushcore.mint_token(SECRET, "phone-1", ttl=60, now=NOW)
    with pytest.warns(DeprecationWarning, match=r"pushcore\.tokens\.verify is deprecated.*pushcore\.verify_token"):
        claims = tokens.verify(SECRET, "phone-1", token, now=NOW)
    assert claims == pushcore.verify_token(SECRET, "phone-1", token, now=NOW)


def test_the_warning_points_at_the_caller():
    with pytest.warns(DeprecationWarning) as caught:
        tokens.mint(SECRET, "d", ttl=60, now=NOW)
    assert caught[0].filename == __file__


OLD = re.compile(r"tokens\.mint\b(?!_)|tokens\.verify\b(?!_)|from pushcore\.tokens import[^\n]*\b(mint|verify)\b(?!_)"
                 r"|from \.\.?tokens import[^\n]*\b(mint|verify)\b(?!_)")

MULTILINE = re.compile(r"from (?:pushcore|\.\.?)\.?tokens import \(([^)]*)\)")


def test_nothing_uses_or_documents_the_old_names():
    files = [ROOT / "README.md", *ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py"),
             *(ROOT / "pushcore").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    offenders = []
    for path in sorted(set(files)):
        if path == Path(__file__) or path.name == "tokens.py" and path.parent.name == "pushcore":
            continue
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if OLD.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        for names in MULTILINE.findall(text):  # from pushcore.tokens import (\n ... mint, ...)
            if re.search(r"\b(mint|verify)\b(?!_)", names):
                offenders.append(f"{path.relative_to(ROOT)}: imports mint/verify from pushcore.tokens")
    assert not offenders, "\n".join(offenders)
