"""Every test that skips for missing machinery goes through tests/machinery.py (skip_or_fail,
requires, module_requires), which fails instead under DNSCACHE_REQUIRE_ALL=1 (scripts/test.sh,
CI). A plain pytest.skip / skipif / importorskip would let CI pass with a tool missing, so this
test greps the test tree and fails on any, outside the allow-list below."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.machinery import requires

TESTS = Path(__file__).resolve().parent.parent
PLAIN_SKIP = re.compile(r"pytest\s*\.\s*(skip\s*\(|importorskip\s*\(|mark\s*\.\s*skip(if)?\b)"
                        r"|unittest\s*\.\s*skip")

#: (path relative to tests/, text of the line stripped) -> why a plain skip is right there.
ALLOWED: dict[tuple[str, str], str] = {
    ("machinery.py", "pytest.skip(reason)"):
        "skip_or_fail itself: the one place that decides between skip and fail",
}


def plain_skips() -> list[str]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS).as_posix()
        if rel == Path(__file__).relative_to(TESTS).as_posix():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if PLAIN_SKIP.search(code) and (rel, line.strip()) not in ALLOWED:
                found.append(f"tests/{rel}:{number}: {line.strip()}")
    return found


def test_no_plain_skip_for_missing_machinery() -> None:
    found = plain_skips()
    assert not found, ("use tests/machinery.py (skip_or_fail, requires, module_requires, "
                       "missing_tools/missing_root/missing_module) instead of:\n"
                       + "\n".join(found))


def test_the_grep_sees_each_form() -> None:
    """The pattern matches every plain form it must catch, and not the helpers."""
    for bad in ('pytest.skip("no named")', "@pytest.mark.skipif(x, reason='y')",
                'm = pytest.importorskip("moto.server")', "@pytest.mark.skip",
                "pytestmark = pytest.mark.skipif(", "@unittest.skip('x')"):
        assert PLAIN_SKIP.search(bad), bad
    for good in ('skip_or_fail("no named")', "@requires(missing_root('chown'))",
                 '_machinery = module_requires(missing_tools("named"))',
                 "import_or_skip('x')"):
        assert not PLAIN_SKIP.search(good), good


def test_allow_list_entries_still_exist() -> None:
    """An allowed line that is gone should leave the list too."""
    for rel, text in ALLOWED:
        lines = [line.strip() for line in (TESTS / rel).read_text().splitlines()]
        assert text in lines, (rel, text)


def test_requires_skips_or_fails_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe() -> str:
        return "ran"

    assert requires(None)(probe) is probe
    wrapped = requires("frobnicator not installed")(probe)
    monkeypatch.delenv("DNSCACHE_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="frobnicator"):
        wrapped()
    monkeypatch.setenv("DNSCACHE_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="required test machinery missing"):
        wrapped()
