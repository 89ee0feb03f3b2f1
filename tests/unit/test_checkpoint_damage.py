"""A damaged state directory: every kind of damage is a `StateError` with one line naming the
file and what to do, wherever the state is read (loading a checkpoint, `pristine()`, restore).
The order of durable steps in a commit is checked here with the step hook; the real kills are in
tests/integration/test_commit_crash.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnscache_agent import hostfs
from dnscache_agent.checkpoint import FORMAT, MANIFEST, Checkpoint, StateStore, parse_manifest
from dnscache_agent.errors import StateError
from dnscache_agent.rootfs import Root

STATE = "/var/lib/dnscache-agent"
CONF = "/etc/app.conf"


@pytest.fixture
def root(tmp_path: Path) -> Root:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/app.conf").write_bytes(b"pre-agent\n")
    return Root(tmp_path)


def registered(root: Root) -> StateStore:
    store = StateStore(root)
    store.original.register(CONF)
    root.path(CONF).write_bytes(b"agent's\n")
    return store


def manifest_of(store: StateStore) -> Path:
    return store.base / "original" / MANIFEST


def backup_of(store: StateStore) -> Path:
    return store.base / "original" / "files" / store.original.entries[CONF].backup


def one_line(exc: pytest.ExceptionInfo[StateError], *names: str) -> str:
    text = str(exc.value)
    assert "\n" not in text
    assert exc.value.exit_code == 11
    for name in names:
        assert name in text, text
    assert "move it aside and rerun" in text
    return text


def valid_manifest(store: StateStore) -> dict[str, object]:
    data = json.loads(manifest_of(store).read_bytes())
    assert isinstance(data, dict)
    return data


MANIFEST_DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "empty": lambda raw: b"",
    "non-utf8": lambda raw: raw.replace(b'"entries"', b'"entr\xff\xfeies"'),
    "foreign-json-list": lambda raw: b"[1, 2, 3]",
    "foreign-json-object": lambda raw: b'{"version": 3, "resources": []}',
    "foreign-format": lambda raw: raw.replace(FORMAT.encode(), b"someone-else/7"),
    "binary": lambda raw: bytes(range(256)),
}


@pytest.mark.parametrize("kind", sorted(MANIFEST_DAMAGE))
def test_damaged_manifest_is_one_line_everywhere(root: Root, kind: str) -> None:
    store = registered(root)
    path = manifest_of(store)
    path.write_bytes(MANIFEST_DAMAGE[kind](path.read_bytes()))
    for read in (lambda: store.original, lambda: store.pristine(CONF),
                 lambda: store.pristine_link(CONF), lambda: store.original.restore()):
        with pytest.raises(StateError) as exc:
            read()
        one_line(exc, str(path))


ENTRY_DAMAGE: dict[str, tuple[object, str]] = {
    "missing-path": ({"existed": True}, "missing field path"),
    "missing-existed": ({"path": CONF}, "missing field existed"),
    "no-backup": ({"path": CONF, "existed": True, "sha256": "ab"}, "has no backup"),
    "mode-string": ({"path": CONF, "existed": False, "mode": "0644"}, "mode is '0644'"),
    "relative": ({"path": "etc/x", "existed": False}, "not an absolute host path"),
    "escapes-root": ({"path": "/../../etc/shadow", "existed": False},
                     "not an absolute host path"),
    "backup-escapes": ({"path": CONF, "existed": True, "sha256": "ab",
                        "backup": "../../../etc/shadow"}, "is not a file name"),
    "unknown-field": ({"path": CONF, "existed": False, "labels": 1}, "unknown field labels"),
    "not-object": ("just a string", "not an object"),
}


@pytest.mark.parametrize("kind", sorted(ENTRY_DAMAGE))
def test_entry_with_missing_or_bad_fields(root: Root, kind: str) -> None:
    store = registered(root)
    data = valid_manifest(store)
    entry, expected = ENTRY_DAMAGE[kind]
    data["entries"] = [entry]
    manifest_of(store).write_text(json.dumps(data))
    with pytest.raises(StateError) as exc:
        store.pristine(CONF)
    assert expected in one_line(exc, str(manifest_of(store)), "entry 0")


def test_manifest_of_an_earlier_version_still_loads(root: Root) -> None:
    """Manifests written before the format marker have no `format` key."""
    store = registered(root)
    data = valid_manifest(store)
    del data["format"]
    manifest_of(store).write_text(json.dumps(data))
    assert store.pristine(CONF) == b"pre-agent\n"


def test_missing_backup_names_it(root: Root) -> None:
    store = registered(root)
    backup = backup_of(store)
    backup.unlink()
    for read in (lambda: store.pristine(CONF), lambda: store.original.restore()):
        with pytest.raises(StateError) as exc:
            read()
        assert f"backup of {CONF} is missing" in one_line(exc, str(backup))
    assert root.path(CONF).read_bytes() == b"agent's\n"  # nothing restored


def test_corrupt_backup_never_becomes_the_base_of_a_plan(root: Root) -> None:
    """pristine() and original_bytes() check the sha256 as restore() does."""
    store = registered(root)
    backup_of(store).write_bytes(b"tampered\n")
    for read in (lambda: store.pristine(CONF), lambda: store.original.original_bytes(CONF),
                 lambda: store.original.restore()):
        with pytest.raises(StateError) as exc:
            read()
        assert "is corrupt" in one_line(exc, str(backup_of(store)), CONF)


def test_a_damaged_entry_restores_nothing(root: Root) -> None:
    """Every backup is checked before the first file is put back."""
    (root.base / "etc/other.conf").write_bytes(b"other\n")
    store = StateStore(root)
    store.original.register("/etc/other.conf")
    store.original.register(CONF)
    root.path(CONF).write_bytes(b"agent's\n")
    root.path("/etc/other.conf").write_bytes(b"agent's other\n")
    backup_of(store).write_bytes(b"tampered\n")  # the second entry; restore runs in reverse
    with pytest.raises(StateError):
        store.original.restore()
    assert root.path("/etc/other.conf").read_bytes() == b"agent's other\n"


def test_unreadable_manifest_directory(root: Root) -> None:
    store = registered(root)
    path = manifest_of(store)
    path.unlink()
    path.mkdir()  # EISDIR
    with pytest.raises(StateError) as exc:
        Checkpoint(root, path.parent)
    one_line(exc, str(path), "cannot read")


def test_parse_manifest_is_pure() -> None:
    entries, meta = parse_manifest(
        json.dumps({"format": FORMAT, "entries": [{"path": "/etc/x", "existed": False}],
                    "meta": {"k": 1}}).encode(), Path("/m"), Path("/d"))
    assert list(entries) == ["/etc/x"] and meta == {"k": 1}
    with pytest.raises(StateError, match="registered twice"):
        parse_manifest(json.dumps({"entries": [{"path": "/etc/x", "existed": False}] * 2})
                       .encode(), Path("/m"), Path("/d"))


# --- the order of durable steps ------------------------------------------------------------

def test_backup_is_durable_before_the_manifest_names_it(root: Root) -> None:
    steps: list[str] = []
    Checkpoint(root, root.path(STATE) / "journal", step=steps.append).register(CONF)
    assert steps == ["journal:backup-synced:/etc/app.conf", "journal:manifest-tmp-synced",
                     "journal:manifest-renamed"]


def test_discard_is_one_rename_then_the_delete(root: Root) -> None:
    steps: list[str] = []
    journal = Checkpoint(root, root.path(STATE) / "journal", step=steps.append)
    journal.register(CONF)
    steps.clear()

    def crash_after_rename(name: str) -> None:
        steps.append(name)
        if name.endswith("discard-tombstoned"):
            raise KeyboardInterrupt  # stands for the kill: the integration test kills for real

    journal.step = crash_after_rename
    with pytest.raises(KeyboardInterrupt):
        journal.discard()
    assert steps == ["journal:discard-tombstoned"]
    # The journal is gone under its own name at once: recovery finds nothing to restore.
    store = StateStore(root)
    assert not store.journal.exists
    tombs = [p.name for p in store.base.iterdir() if p.name != "original"]
    assert len(tombs) == 1 and tombs[0].startswith(hostfs.TOMBSTONE_PREFIX + "journal-")
    # The next discard (or sweep) finishes the delete.
    assert [p.name for p in store.sweep()] == tombs
    assert list(store.base.iterdir()) == []


def test_forget_saves_the_manifest_before_deleting_the_backup(root: Root) -> None:
    store = StateStore(root)
    original = store.original
    original.register(CONF)
    backup = backup_of(store)

    def check(name: str) -> None:
        if name.endswith("manifest-renamed"):
            assert backup.exists()  # manifest first; the backup is deleted after
            entries = json.loads(manifest_of(store).read_bytes())["entries"]
            assert CONF not in [e["path"] for e in entries]
            seen.append(name)

    seen: list[str] = []
    original.step = check
    original.forget([CONF])
    assert seen
    assert not backup.exists()
    assert not store.original.has(CONF)


def test_clear_leaves_no_state_and_no_tombstone(root: Root) -> None:
    store = registered(root)
    store.journal.register(CONF)
    store.clear()
    assert not store.base.exists()
    assert not [p for p in store.base.parent.iterdir()
                if p.name.startswith(hostfs.TOMBSTONE_PREFIX)]


def test_every_entry_field_is_validated() -> None:
    """A field added to Entry must be added to the manifest check too, or loading rejects it
    as unknown."""
    from dataclasses import fields

    from dnscache_agent.checkpoint import _FIELD_TYPES, Entry

    assert set(_FIELD_TYPES) == {f.name for f in fields(Entry)}
