"""Real English text, offline: the first-paragraph sentences of the Python standard library's docstrings.

Used by the MiniLM benchmark as sentences to embed (no download, no dataset package). Deterministic for one
Python version: the modules are a fixed list, the paragraphs are filtered (60–400 characters, prose: starting with a
capital, ending with a period, no code punctuation), deduplicated, sorted and shuffled with a fixed seed.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re

MODULES = (
    "os", "json", "re", "collections", "itertools", "functools", "pathlib", "argparse", "logging", "subprocess",
    "threading", "asyncio", "email", "http.client", "urllib.request", "datetime", "decimal", "fractions",
    "statistics", "random", "string", "textwrap", "difflib", "csv", "sqlite3", "zipfile", "tarfile", "shutil",
    "tempfile", "unittest", "doctest", "pdb", "inspect", "typing", "dataclasses", "enum", "abc", "contextlib",
    "heapq", "bisect", "queue", "socket", "ssl", "hashlib", "hmac", "secrets", "base64", "binascii", "struct",
    "codecs", "locale", "gettext", "calendar", "time", "sched", "signal", "mmap", "select", "selectors", "pickle",
    "copy", "pprint", "reprlib", "weakref", "types", "operator", "math", "cmath", "numbers", "array", "io", "glob",
    "fnmatch", "linecache", "tokenize", "ast", "dis", "trace", "timeit", "cProfile", "pstats",
    "xml.etree.ElementTree", "html", "html.parser", "mailbox", "mimetypes", "smtplib", "uuid", "ipaddress",
    "configparser", "tomllib", "zlib", "gzip", "bz2", "lzma", "platform", "sysconfig", "warnings", "traceback",
    "gc", "site",
)
_PROSE = re.compile(r"^[A-Z][^>|=]*[.]$")


def stdlib_sentences(seed: int = 0) -> list[str]:
    texts: set[str] = set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for obj in [module] + [getattr(module, n) for n in dir(module) if not n.startswith("_")]:
            if obj is not module and getattr(obj, "__module__", name) != name:
                continue
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            for para in doc.split("\n\n"):
                text = " ".join(para.split())
                if 60 <= len(text) <= 400 and _PROSE.match(text) and not any(c in text for c in "{}[]<>`"):
                    texts.add(text)
    ordered = sorted(texts)
    random.Random(seed).shuffle(ordered)
    return ordered
