"""Extract documentation units from the running Python, using the standard library only.

Run by `hf_llm.data.pydocs` as `python -I -S _pydocs_extract.py` in a fresh interpreter: what other libraries import
or patch (torch, for one, replaces `inspect.getfile`) must not change the corpus, so the extraction never runs in
the caller's process. Prints `{"units": [...], "missing": [...]}` as JSON.
"""

import importlib
import inspect
import json
import re
import sys
import warnings

# The classification classes: area of the standard library -> modules documented in it. Order matters (class ids).
STDLIB_AREAS: dict[str, tuple[str, ...]] = {
    "text_processing": (
        "string re difflib textwrap unicodedata stringprep codecs html html.parser gettext locale shlex tokenize csv "
        "configparser tomllib xml.etree.ElementTree xml.dom.minidom xml.dom.pulldom xml.sax xml.sax.handler "
        "xml.sax.saxutils xml.sax.xmlreader"
    ).split(),
    "files_and_os": (
        "os posixpath pathlib shutil glob fnmatch tempfile filecmp io stat fileinput zipfile tarfile gzip bz2 lzma "
        "zlib platform errno getpass time shelve dbm pickle copyreg marshal sqlite3 zipimport netrc plistlib"
    ).split(),
    "networking_and_internet": (
        "socket ssl select selectors http http.client http.server http.cookies http.cookiejar urllib.request "
        "urllib.parse urllib.error urllib.robotparser email.message email.parser email.utils email.headerregistry "
        "email.policy email.generator smtplib imaplib poplib ftplib mailbox mimetypes base64 binascii quopri json "
        "json.decoder json.encoder ipaddress webbrowser socketserver wsgiref.simple_server wsgiref.handlers "
        "wsgiref.util xmlrpc.client xmlrpc.server uuid"
    ).split(),
    "numbers_and_math": "math cmath decimal _pydecimal fractions numbers random statistics".split(),
    "data_structures_and_algorithms": (
        "collections collections.abc heapq bisect array copy pprint enum dataclasses functools itertools operator "
        "types weakref graphlib reprlib queue struct hashlib hmac secrets"
    ).split(),
    "concurrency": (
        "threading _thread multiprocessing multiprocessing.pool multiprocessing.managers multiprocessing.queues "
        "multiprocessing.shared_memory multiprocessing.connection multiprocessing.synchronize "
        "multiprocessing.process multiprocessing.context concurrent.futures concurrent.futures.thread "
        "concurrent.futures.process concurrent.futures._base asyncio.tasks asyncio.events asyncio.base_events "
        "asyncio.queues asyncio.locks asyncio.streams asyncio.subprocess asyncio.futures asyncio.runners "
        "asyncio.taskgroups asyncio.timeouts asyncio.transports asyncio.protocols asyncio.selector_events "
        "asyncio.unix_events asyncio.sslproto asyncio.coroutines asyncio.exceptions subprocess sched contextvars "
        "signal"
    ).split(),
}
# Documented for pretraining, instruction and preference data, but not a classification class.
GENERAL_MODULES: tuple[str, ...] = tuple(
    (
        "builtins unittest.case unittest.mock unittest.loader unittest.suite doctest pdb bdb inspect dis ast "
        "logging logging.handlers logging.config argparse typing traceback warnings timeit trace tracemalloc "
        "contextlib abc importlib importlib.util importlib.abc importlib.machinery importlib.metadata "
        "importlib.resources pydoc cProfile profile pstats gc atexit code codeop site sysconfig keyword sys "
        "optparse getopt cmd calendar datetime zoneinfo pkgutil modulefinder runpy symtable linecache"
    ).split()
)
TOPICS_AREA = "language_reference"
GENERAL_AREA = "general"
MIN_DOC_CHARS = 40


def _clean(doc: object) -> str | None:
    if not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc).strip()
    # Object reprs carry memory addresses, which differ between runs.
    doc = re.sub(r" at 0x[0-9a-fA-F]+", "", doc)
    return doc if len(doc) >= MIN_DOC_CHARS else None


def _summary(doc: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _defined_in(obj: object, module_name: str) -> bool:
    return getattr(obj, "__module__", None) == module_name


def _module_items(module_name: str) -> list[tuple[str, str]] | None:
    """`(qualified name, docstring)` for the module and what it defines, in a deterministic order."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
    except ImportError:
        return None
    items = []
    doc = _clean(module.__doc__)
    if doc:
        items.append((module_name, doc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # typing.io and friends warn on attribute access
        members = sorted(vars(module).items())
        for name, obj in members:
            if name.startswith("_"):
                continue
            if inspect.isclass(obj) and _defined_in(obj, module.__name__):
                doc = _clean(obj.__doc__)
                if doc:
                    items.append((f"{module_name}.{name}", doc))
                for attr, value in sorted(vars(obj).items()):
                    if attr.startswith("_"):
                        continue
                    if callable(value) or isinstance(value, (property, classmethod, staticmethod)):
                        doc = _clean(getattr(value, "__doc__", None))
                        if doc:
                            items.append((f"{module_name}.{name}.{attr}", doc))
            elif callable(obj) and _defined_in(obj, module.__name__):
                doc = _clean(obj.__doc__)
                if doc:
                    items.append((f"{module_name}.{name}", doc))
    return items


def _topic_units() -> list[dict]:
    from pydoc_data.topics import topics

    units = []
    for key in sorted(topics):
        text = topics[key].strip()
        if len(text) < MIN_DOC_CHARS:
            continue
        lines = text.split("\n")
        # Topics open with a title underlined by '*' or '='; a few start directly with prose.
        if len(lines) > 1 and set(lines[1].strip()) <= set("*=-") and lines[1].strip():
            title, body = lines[0].strip(), "\n".join(lines[2:]).strip()
        else:
            title, body = key.replace("-", " "), text
        units.append({"name": f"topic:{key}", "area": TOPICS_AREA, "title": title, "text": text, "body": body})
    return units


def _extract_units() -> tuple[list[dict], list[str]]:
    """All units, deduplicated across the corpus, plus the modules that could not be imported here."""
    seen: set[str] = set()
    units, missing = [], []
    plan = [(area, module) for area, modules in STDLIB_AREAS.items() for module in modules]
    plan += [(GENERAL_AREA, module) for module in GENERAL_MODULES]
    for area, module_name in plan:
        items = _module_items(module_name)
        if items is None:
            missing.append(module_name)
            continue
        kept = []
        for qualname, doc in items:
            if doc not in seen:
                seen.add(doc)
                kept.append((qualname, doc))
        if kept:
            units.append({"name": module_name, "area": area, "items": kept})
    for unit in _topic_units():
        if unit["text"] not in seen:
            seen.add(unit["text"])
            units.append(unit)
    return units, missing


if __name__ == "__main__":
    units, missing = _extract_units()
    json.dump({"units": units, "missing": missing}, sys.stdout, ensure_ascii=False)
