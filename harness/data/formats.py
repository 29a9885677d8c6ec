"""Small readers for the file formats that registry packages ship their text in.

Pure Python, no extra dependencies: archive members (``.tar.gz``/``.tgz``, wheels/zips, Debian ``.deb``
read as an ``ar`` archive), R's serialization format (the lazy-load ``.rdb``/``.rdx`` databases and ``.rda``
files of CRAN data packages), SWORD ``zCom``/``zText`` modules (compressed Bible commentaries), e-mail bodies
and HTML to text.
"""

from __future__ import annotations

import bz2
import email
import email.policy
import gzip
import html
import io
import lzma
import re
import struct
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from html.parser import HTMLParser

# ----------------------------------------------------------------------------------------------- archives


def _tar_members(tf: tarfile.TarFile, want: Callable[[str], bool]) -> dict[str, bytes]:
    out = {}
    for m in tf:
        if not m.isfile():
            continue
        name = m.name[2:] if m.name.startswith("./") else m.name
        if want(name):
            f = tf.extractfile(m)
            if f is not None:
                out[name] = f.read()
    return out


def _deb_data_tar(path: str) -> bytes:
    """The ``data.tar`` (decompressed) of a Debian package, read as an ``ar`` archive."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"!<arch>\n":
        raise ValueError(f"{path}: not a Debian package (ar archive)")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                return lzma.decompress(body)
            if name.endswith(".gz"):
                return gzip.decompress(body)
            if name.endswith(".bz2"):
                return bz2.decompress(body)
            if name == "data.tar":
                return body
            # zstd and anything else: let dpkg-deb do it
            return subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", path], check=True, capture_output=True
            ).stdout
    raise ValueError(f"{path}: no data.tar member")


def read_members(path: str, want: Callable[[str], bool]) -> dict[str, bytes]:
    """``{member path: bytes}`` for the members of an archive for which ``want(path)`` is true.

    Handles ``.tar.gz``/``.tgz``/``.tar.*`` (npm tarballs, sdists), ``.whl``/``.zip`` and ``.deb`` (member
    paths without the leading ``./``).
    """
    if path.endswith(".deb"):
        with tarfile.open(fileobj=io.BytesIO(_deb_data_tar(path)), mode="r:") as tf:
            return _tar_members(tf, want)
    if path.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/") and want(n)}
    with tarfile.open(path, mode="r:*") as tf:
        return _tar_members(tf, want)


# --------------------------------------------------------------------------------- R serialization (XDR)


class RObject:
    """An R vector with attributes (``names``, ``class``, ``row.names`` ...)."""

    def __init__(self, value, attrs: dict):
        self.value = value
        self.attrs = attrs


class _RPairList(list):
    pass


class _RReader:
    """A reader for R's XDR serialization, enough for data packages: character, integer, logical and
    double vectors, lists, pairlists/attributes, symbols, references and the common ALTREP classes."""

    def __init__(self, blob: bytes):
        self.b = blob
        self.p = 0
        self.refs: list = []

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def raw(self, n: int) -> bytes:
        v = self.b[self.p : self.p + n]
        self.p += n
        return v

    def header(self):
        fmt = self.raw(2)
        if fmt != b"X\n":
            raise ValueError(f"unsupported R serialization format {fmt!r} (only XDR)")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader version
        if version == 3:
            self.raw(self.int())  # native encoding

    def item(self):
        flags = self.int()
        sexp = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if sexp in (
            254,
            242,
            253,
            252,
            251,
            250,
            249,
            248,
            247,
        ):  # NIL, empty/global/base env, unbound, missing
            return None
        if sexp == 255:  # REFSXP
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if sexp == 1:  # SYMSXP
            sym = self.item()
            self.refs.append(sym)
            return sym
        if sexp == 9:  # CHARSXP
            n = self.int()
            return None if n == -1 else self.raw(n).decode("utf-8", "replace")
        if sexp in (2, 6, 17):  # LISTSXP, LANGSXP, DOTSXP: (tag, value) pairs
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            out = _RPairList([(tag, car)])
            if isinstance(cdr, _RPairList):
                out.extend(cdr)
            del attr
            return out
        if sexp == 4:  # ENVSXP
            self.int()  # locked
            env: dict = {}
            self.refs.append(env)
            self.item()  # enclosure
            frame = self.item()
            self.item()  # hashtab
            self.item()  # attributes
            if isinstance(frame, _RPairList):
                env.update(frame)
            return env
        if sexp == 238:  # ALTREP_SXP
            info = self.item()
            state = self.item()
            self.item()  # attributes
            cls = info[0][1] if isinstance(info, _RPairList) else None
            if cls == "compact_intseq":
                n, start, step = (int(x) for x in state)
                return list(range(start, start + n * step, step))
            if cls in ("wrap_string", "wrap_integer", "wrap_real", "wrap_logical"):
                return state[0][1] if isinstance(state, _RPairList) else state[0]
            if cls == "deferred_string":
                arg = state[0][1] if isinstance(state, _RPairList) else state
                return [str(x) for x in arg]
            raise ValueError(f"unsupported R ALTREP class {cls!r}")
        if sexp in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.int()
            value = [self.item() for _ in range(n)]
        elif sexp in (10, 13):  # LGLSXP, INTSXP
            n = self.int()
            value = list(struct.unpack_from(f">{n}i", self.b, self.p))
            self.p += 4 * n
        elif sexp == 14:  # REALSXP
            n = self.int()
            value = list(struct.unpack_from(f">{n}d", self.b, self.p))
            self.p += 8 * n
        else:
            raise ValueError(f"unsupported R SEXP type {sexp} at byte {self.p}")
        if has_attr:
            attrs = self.item()
            return RObject(value, dict(attrs) if isinstance(attrs, _RPairList) else {})
        return value


def _decompress_any(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:3] == b"BZh":
        return bz2.decompress(blob)
    if blob[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(blob)
    return blob


def r_unserialize(blob: bytes):
    r = _RReader(blob)
    r.header()
    return r.item()


def read_rda(blob: bytes) -> dict:
    """The objects of an ``.rda``/``.RData`` file, ``{name: value}``."""
    data = _decompress_any(blob)
    if data[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise ValueError(f"not an R data file (magic {data[:5]!r})")
    return dict(r_unserialize(data[5:]))


def read_rdb(rdx: bytes, rdb: bytes) -> dict:
    """The objects of an R lazy-load database (``Rdata.rdx`` index + ``Rdata.rdb`` blobs)."""
    index = r_unserialize(_decompress_any(rdx))
    if isinstance(index, RObject):
        index = dict(zip(index.attrs["names"], index.value, strict=True))
    variables = index["variables"]
    out = {}
    for name, (offset, length) in zip(variables.attrs["names"], variables.value, strict=True):
        offset, length = int(offset), int(length)
        out[name] = r_unserialize(zlib.decompress(rdb[offset + 4 : offset + length]))
    return out


def r_columns(frame: RObject) -> dict[str, list]:
    """A data frame as ``{column: values}``."""
    values = [c.value if isinstance(c, RObject) else c for c in frame.value]
    return dict(zip(frame.attrs["names"], values, strict=True))


# ----------------------------------------------------------------------------------------------- SWORD


def sword_blocks(index: bytes, data: bytes) -> list[bytes]:
    """The decompressed blocks of a SWORD zText/zCom module: ``*.bzs``/``*.czs`` is an index of 12-byte
    little-endian records ``(offset, size, uncompressed size)`` into the zlib blocks of ``*.bzz``/``*.czz``.
    """
    out = []
    for i in range(0, len(index) - 11, 12):
        offset, size, _usize = struct.unpack_from("<III", index, i)
        if size:
            out.append(zlib.decompress(data[offset : offset + size]))
    return out


_OSIS_PARA = re.compile(r"<(?:div|p)\b[^>]*\beID=[^>]*/>|</p>|<lb\b[^>]*/>|</title>")
_TAG = re.compile(r"<[^>]+>")


def osis_to_text(osis: str) -> str:
    """Plain text from OSIS markup: paragraph ends become blank lines, other tags are dropped."""
    text = _OSIS_PARA.sub("\n\n", osis)
    text = html.unescape(_TAG.sub("", text))
    return normalize_whitespace(text)


# ---------------------------------------------------------------------------------------- text clean-up

_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANKS = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces, strip each line, keep at most one blank line between paragraphs."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # malformed markup: fall back to a regex strip
        return normalize_whitespace(html.unescape(_TAG.sub(" ", markup)))
    return normalize_whitespace("".join(parser.parts))


def email_body(raw: bytes) -> str:
    """The human-written text of an e-mail: headers dropped, text/plain parts (else text/html, stripped)
    decoded with their charset, quoted reply lines (``>``) removed."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            text = payload.decode(charset, errors="replace")
        except LookupError:
            text = payload.decode("latin-1", errors="replace")
        (plain if ctype == "text/plain" else htmls).append(text)
    if plain:
        body = "\n\n".join(plain)
    elif htmls:
        body = "\n\n".join(html_to_text(h) for h in htmls)
    else:
        return ""
    if "<html" in body[:2000].lower():
        body = html_to_text(body)
    lines = [line for line in body.replace("\r\n", "\n").split("\n") if not line.lstrip().startswith(">")]
    return normalize_whitespace("\n".join(lines))
