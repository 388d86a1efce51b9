"""``kcdp key generate FILE`` and ``kcdp key show [FILE]``: encryption key files.

``generate`` writes a new key file holding one fresh 32-byte key (mode 0600; an existing
file is never overwritten) and prints its key id. To rotate, generate a new file and put
its key line *above* the lines of the old file: the first key seals new objects, every
key opens what it sealed (docs/FORMAT.md "Encryption"). ``show`` prints the key ids of a
key file (``--encryption-key-file`` by default), current first, never the keys; with a
store it also says whether the store is encrypted and which key ids its marker lists.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.config import Settings
from connectors.errors import ConfigError, EncryptionKeyError
from connectors.store.keyring import generate_key_file, load_key_file


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    key = generate_key_file(args.file)
    print(f"{args.file}: new key {key.id}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.store import open_store
    from connectors.store.sealed import read_marker

    path = args.file or settings.key_file
    if not path:
        raise ConfigError("kcdp key show needs FILE or --encryption-key-file")
    ring = load_key_file(path)
    doc: dict[str, Any] = {"file": str(path), "current": ring.current.id, "keys": ring.ids()}
    if args.check_store:
        doc["store"] = settings.store_url
        try:
            store = open_store(settings.store_url, key_file=str(path))
        except EncryptionKeyError as exc:  # a store created without encryption
            doc["store_state"], marker = exc.message, None
        else:
            try:
                marker = read_marker(getattr(store, "inner", store))
            finally:
                store.close()
            doc["store_state"] = (
                f"encrypted, key ids {', '.join(marker)}"
                if marker
                else "empty: sealed once written"
            )
        doc["store_key_ids"] = marker or []
    if args.json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    for i, kid in enumerate(ring.ids()):
        print(f"{kid}  {'current (seals new objects)' if i == 0 else 'older (opens only)'}")
    if args.check_store:
        print(f"store {settings.store_url}: {doc['store_state']}")
    return 0


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "key",
        parents=list(parents),
        help="generate or show encryption key files (encryption at rest)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ksub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    gen = ksub.add_parser(
        "generate", parents=list(parents), help="write a new key file (mode 0600)"
    )
    gen.add_argument("file", help="the key file to create (never overwritten)")
    gen.set_defaults(func=cmd_generate)
    show = ksub.add_parser(
        "show", parents=list(parents), help="print a key file's key ids (never the keys)"
    )
    show.add_argument("file", nargs="?", help="key file (default: --encryption-key-file)")
    show.add_argument(
        "--check-store",
        dest="check_store",
        action="store_true",
        help="also say whether the store (--store) is encrypted and by which keys",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_show)
