"""``hf:`` model references: files in the Hugging Face hub cache, downloaded into it when online.

``hf:OWNER/REPO[@REVISION][/PATH]`` names a file (or the snapshot directory) in the Hugging Face hub
cache; ``hf:OWNER/REPO[@REVISION]:QUANT`` names the GGUF file of one quant type, as llama.cpp's
``-hf user/repo:quant`` and Ollama's ``hf.co/user/repo:quant`` do. The cache is read per
huggingface_hub's documented layout (https://huggingface.co/docs/huggingface_hub/guides/manage-cache),
so huggingface_hub need not be installed to use what is cached; tests check that both agree where it is:

  $HF_HUB_CACHE/models--OWNER--REPO/refs/REVISION         the commit a branch or tag points at
                                   /snapshots/COMMIT/PATH  the file (a link into ../../blobs/)
                                   /.no_exist/COMMIT/PATH  the hub said PATH does not exist at COMMIT

What is cached is used without any network call. What is not is downloaded with huggingface_hub's
``hf_hub_download`` (into the same cache, with its own progress bar) when huggingface_hub is installed
and its offline switch ``HF_HUB_OFFLINE`` is not set; otherwise, or when the download fails, a HubError
names the path looked at and the command that fetches it (and the download's cause). One request
without retries goes first (:func:`_hf_probe`), so that no network is an error at once, not after
huggingface_hub's ~23 s of retries.

Grammar. OWNER and REPO never hold ':' or '@' (huggingface_hub's repo id rules) and git refuses ':' in
branch and tag names, so the first '/'-separated segment after OWNER splits unambiguously into
REPO[@REVISION][:QUANT]; anything after the next '/' is the PATH, which may hold ':' ("a:b.gguf").
A quant tag and a PATH are exclusive; the revision comes before the tag.

Quant tags (case-insensitive) select among the repository's GGUF model files: names ending in ".gguf",
not projector ("mmproj") or importance-matrix ("imatrix") files, and of a split model only its first
shard ("-00001-of-00003.gguf"). A file matches when the tag is a token of its file name: preceded by the
start, '-', '.' or '_' and followed by '-', '.', the split suffix or the end, so Q4_K_M matches
"qwen2.5-0.5b-instruct-q4_k_m.gguf" and "Model.Q4_K_M.gguf" but not "Model-Q4_K_M_L.gguf" or
"Model-IQ4_K_M.gguf". One match is the file; none or several is a HubError listing the candidates.
``hf:OWNER/REPO`` (no tag, no path) of a repository with GGUF model files picks its Q4_K_M file, else its
only GGUF model file; several and no Q4_K_M is a HubError listing them (a silent pick could be a 16-bit
file four times the size). Without GGUF files it is the snapshot directory, as ``hf:OWNER/REPO/`` always is.
The files come from the cached snapshot first; only when it holds no match (or is not cached) and a
download may happen does huggingface_hub's ``list_repo_files`` list the repository.

Split models are refused with the merge command: edgesdk's GGUF loader reads one file.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import shlex
import urllib.parse
from pathlib import Path

import attrs

from ._errors import HubError

__all__ = ["HF_DEFAULT_QUANT", "HF_PREFIX", "HFRef", "hf_cache_dir", "hf_path", "parse_hf"]

log = logging.getLogger("edgesdk.hub")

HF_PREFIX = "hf:"
# huggingface_hub's validate_repo_id for one part of OWNER/REPO: word characters, "-" and ".", 1-96 long,
# starting and ending with a word character, no "--" or "..", not ending in ".git".
_HF_PART = re.compile(r"(?a:\w(?:[\w.-]{0,94}\w)?)")
_HF_COMMIT = re.compile(r"[0-9a-f]{40}")
_HF_TAG = re.compile(r"(?a:[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?)")
_HF_FORM = (
    "hf:OWNER/REPO[@REVISION][/PATH/IN/REPO] or hf:OWNER/REPO[@REVISION]:QUANT "
    "(e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf or hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M)"
)
#: The quant type ``hf:OWNER/REPO`` picks in a repository of GGUF files, as llama.cpp and Ollama do.
HF_DEFAULT_QUANT = "Q4_K_M"
_GGUF_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_HF_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's ENV_VARS_TRUE_VALUES


@attrs.frozen
class HFRef:
    """A parsed ``hf:`` reference: ``repo_id`` (OWNER/REPO), ``revision`` (a branch, tag or commit; None
    for ``main``), ``filename`` (a POSIX path inside the repository; "" for none), ``tag`` (a GGUF quant
    type such as "Q4_K_M", as written; "" for none) and ``whole`` (the reference ends in "/": the snapshot
    directory itself, never a GGUF pick)."""

    repo_id: str
    revision: str | None
    filename: str
    tag: str = ""
    whole: bool = False

    @property
    def fetch_command(self) -> str:
        """The command that puts this file into the cache (run where there is network)."""
        if self.tag:  # fnmatch is case-sensitive on POSIX; file names spell quant types either way
            pattern = "*" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in self.tag) + "*.gguf"
            args = [self.repo_id, "--include", pattern]
        else:
            args = [self.repo_id, *([self.filename] if self.filename else [])]
        args += ["--revision", self.revision] if self.revision else []
        return "hf download " + " ".join(shlex.quote(a) for a in args)


def _hf_malformed(ref: str, why: str) -> HubError:
    return HubError(f"malformed Hugging Face reference {ref!r}: {why}; expected {_HF_FORM}")


def _hf_safe_path(ref: str, what: str, text: str) -> None:
    """``text`` is a relative POSIX path that stays where it is joined: no "..", ".", empty parts or backslashes."""
    parts = text.split("/")
    if ".." in parts or "." in parts:
        raise HubError(
            f"Hugging Face reference {ref!r}: {what} {text!r} has a '.' or '..' component, which is refused "
            "(a reference names a file inside its repository's snapshot, never outside it)"
        )
    if "" in parts or "\\" in text or "\0" in text:
        raise _hf_malformed(ref, f"{what} {text!r} has an empty component, a backslash or a NUL")


def parse_hf(ref: str) -> HFRef:
    """Parse ``hf:OWNER/REPO[@REVISION][/PATH]`` or ``hf:OWNER/REPO[@REVISION]:QUANT``; HubError for anything
    else. A revision holding "/" (``refs/pr/1``) is written URL-encoded: ``@refs%2Fpr%2F1``."""
    if not ref.startswith(HF_PREFIX):
        raise _hf_malformed(ref, f"it does not start with {HF_PREFIX!r}")
    body = ref[len(HF_PREFIX) :]
    whole = body.endswith("/")
    if whole:
        body = body[:-1]
    owner, _, rest = body.partition("/")
    segment, slash, filename = rest.partition("/")
    head, colon, tag = segment.partition(":")
    repo, at, revision = head.partition("@")
    if not owner or not repo:
        raise _hf_malformed(ref, "it needs OWNER/REPO (a repository without an owner is given with its owner, e.g. openai-community/gpt2)")
    for part in (owner, repo):
        if not _HF_PART.fullmatch(part) or "--" in part or ".." in part or part.endswith(".git"):
            raise _hf_malformed(
                ref,
                f"{part!r} is not a repository owner or name (letters, digits, '-', '_', '.'; at most 96; "
                "no '--' or '..'; not starting or ending with '-' or '.')",
            )
    if colon:
        if "@" in tag:
            raise _hf_malformed(ref, "the revision goes before the quant tag (hf:OWNER/REPO@REVISION:QUANT)")
        if not tag:
            raise _hf_malformed(ref, "':' is not followed by a quant tag (a GGUF quant type such as Q4_K_M)")
        if not _HF_TAG.fullmatch(tag):
            raise _hf_malformed(ref, f"{tag!r} is not a quant tag (a GGUF quant type such as Q4_K_M, Q8_0, IQ4_XS or UD-Q4_K_XL: letters, digits, '_' and '-')")
        if slash:
            raise _hf_malformed(ref, f"a quant tag ({tag}) and a path ({filename or '/'}) are exclusive: give one")
    if at:
        revision = urllib.parse.unquote(revision)
        if not revision:
            raise _hf_malformed(ref, "'@' is not followed by a revision")
        _hf_safe_path(ref, "revision", revision)
        if revision.startswith("/"):
            raise _hf_malformed(ref, f"revision {revision!r} starts with '/'")
    if filename:
        _hf_safe_path(ref, "path", filename)
    return HFRef(f"{owner}/{repo}", revision if at else None, filename, tag, whole and not filename and not tag)


def hf_cache_dir() -> tuple[Path, str]:
    """The Hugging Face hub cache folder and the setting it came from, as huggingface_hub decides it:
    ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE`` (its older name), ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``,
    else ``~/.cache/huggingface/hub``. A blank variable counts as unset."""

    def expand(v: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(v)))

    for var, sub in (("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""), ("HF_HOME", "hub")):
        v = os.environ.get(var, "").strip()
        if v:
            return expand(v) / sub if sub else expand(v), f"${var}" + (f"/{sub}" if sub else "")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return expand(xdg) / "huggingface" / "hub", "$XDG_CACHE_HOME/huggingface/hub"
    return expand("~/.cache/huggingface/hub"), "the default, ~/.cache/huggingface/hub"


def _hf_no_download() -> str:
    """Why nothing may be downloaded now ("" when a download may happen): huggingface_hub's own offline
    switch (``HF_HUB_OFFLINE``, else its older ``TRANSFORMERS_OFFLINE``, read as huggingface_hub reads them)
    or huggingface_hub missing."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        v = os.environ.get(var)
        if v:  # huggingface_hub reads the first one set, non-empty
            if v.upper() in _HF_TRUE:
                return f"${var} is {v!r} (huggingface_hub's offline switch)"
            break
    try:
        found = importlib.util.find_spec("huggingface_hub") is not None
    except (ImportError, ValueError):
        found = False
    return "" if found else "huggingface_hub is not installed (pip install huggingface_hub, and edgesdk downloads what is missing)"


def _hf_how_to_fetch(r: HFRef, blocked: str) -> str:
    cmd = f"{r.fetch_command} (older huggingface_hub: huggingface-cli {r.fetch_command.removeprefix('hf ')})"
    if blocked:
        return f"nothing is downloaded: {blocked}; fetch it first where there is network: {cmd}"
    return f"fetch it where there is network: {cmd}"


def _hf_cause(e: BaseException) -> str:
    """An exception in one line, with the innermost exception that caused it (a DNS failure under a
    huggingface_hub error, say)."""

    def line(x: BaseException) -> str:
        text = " ".join(str(x).split())
        text = text if len(text) <= 400 else text[:400] + "..."
        return f"{type(x).__name__}: {text}" if text else type(x).__name__

    seen, inner, c = {id(e)}, None, e.__cause__ or e.__context__
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        inner, c = c, c.__cause__ or c.__context__
    return line(e) + (f" (caused by {line(inner)})" if inner is not None else "")


def _hf_probe(r: HFRef, missing: str) -> None:
    """One request to the hub through huggingface_hub's own HTTP session (its endpoint, proxies and client
    factory) and without its retries. With no network, ``hf_hub_download`` and ``list_repo_files`` each
    retry five times over ~23 s, logging every retry, before they fail; this fails at once, into the clear
    HubError. Any HTTP answer counts as reachable: what it means is for the real call to say."""
    endpoint = "the Hugging Face hub"
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        endpoint = constants.ENDPOINT
        get_session().head(endpoint, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # no network, DNS, proxy, TLS: one line with the cause
        raise HubError(f"{missing}; {endpoint} cannot be reached, so nothing is downloaded; {_hf_how_to_fetch(r, '')}; cause: {_hf_cause(e)}") from e


def _hf_download(ref: str, r: HFRef, filename: str, cache: Path, missing: str) -> Path:
    """Download ``filename`` of ``r``'s repository into ``cache`` with huggingface_hub's ``hf_hub_download``;
    ``missing`` says what was looked for, for the HubError when that fails."""
    log.info("hub: %s is not in the Hugging Face cache; downloading %s from %s", ref, filename, r.repo_id)
    try:
        import huggingface_hub

        got = huggingface_hub.hf_hub_download(r.repo_id, filename, revision=r.revision, cache_dir=str(cache))
    except Exception as e:  # whatever it raised (no network, 404, gated, disk full), one clear line with the cause
        raise HubError(f"{missing}; downloading it with huggingface_hub failed; {_hf_how_to_fetch(r, '')}; cause: {_hf_cause(e)}") from e
    p = Path(got)
    if not p.is_file():
        raise HubError(f"{missing}; huggingface_hub.hf_hub_download returned {got!r}, which is no file; {_hf_how_to_fetch(r, '')}")
    return p


def _hf_list(ref: str, r: HFRef, missing: str) -> list[str]:
    """The repository's files (POSIX paths) from huggingface_hub's ``list_repo_files``."""
    try:
        import huggingface_hub

        lister = getattr(huggingface_hub, "list_repo_files", None) or huggingface_hub.HfApi().list_repo_files
        return [str(f) for f in lister(r.repo_id, revision=r.revision)]
    except Exception as e:  # as in _hf_download
        raise HubError(f"{missing}; listing the files of {r.repo_id} with huggingface_hub failed; {_hf_how_to_fetch(r, '')}; cause: {_hf_cause(e)}") from e


def _gguf_models(files) -> list[str]:
    """The GGUF model files among repository paths, sorted: "*.gguf" without mmproj and imatrix files, and
    of a split model only its first shard."""
    out = []
    for f in files:
        name = f.rsplit("/", 1)[-1].lower()
        if not name.endswith(".gguf") or "mmproj" in name or "imatrix" in name:
            continue
        split = _GGUF_SPLIT.search(name)
        if split and int(split.group(1)) != 1:
            continue
        out.append(f)
    return sorted(out)


def _quant_matches(path: str, tag: str) -> bool:
    """``tag`` is a token of the file name: see the grammar notes above."""
    stem = _GGUF_SPLIT.sub("", path.rsplit("/", 1)[-1])
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    return re.search(rf"(?:^|[-._]){re.escape(tag)}(?:$|[-.])", stem, re.IGNORECASE) is not None


def _hf_choose(models: list[str], tag: str) -> tuple[str | None, list[str], str]:
    """Pick among GGUF model files: (the file, [], "") or (None, candidates, what was sought)."""
    quant = tag or HF_DEFAULT_QUANT
    matches = [m for m in models if _quant_matches(m, quant)]
    if len(matches) == 1:
        return matches[0], [], ""
    if matches:
        return None, matches, f"several GGUF files match quant {quant!r}"
    if not tag and len(models) == 1:
        return models[0], [], ""
    if tag:
        return None, models, f"no GGUF file matches quant {tag!r}"
    return None, models, f"no GGUF file is of the default quant {HF_DEFAULT_QUANT} and there are several"


def _hf_listing(files: list[str], limit: int = 20) -> str:
    shown = ", ".join(files[:limit]) + (f", ... ({len(files) - limit} more)" if len(files) > limit else "")
    return shown or "none"


def _hf_refuse_split(ref: str, r: HFRef, choice: str) -> None:
    split = _GGUF_SPLIT.search(choice)
    if not split or int(split.group(2)) <= 1:
        return
    n = int(split.group(2))
    first = choice.rsplit("/", 1)[-1]
    shards = choice[: split.start()] + f"-*-of-{split.group(2)}.gguf"
    cmd = "hf download " + " ".join(shlex.quote(a) for a in [r.repo_id, "--include", shards, *(["--revision", r.revision] if r.revision else [])])
    raise HubError(
        f"{ref}: {choice} is the first of {n} shards of a split GGUF model, and edgesdk's GGUF loader reads one file; "
        f"fetch the shards ({cmd}), merge them with llama.cpp's llama-gguf-split --merge {first} merged.gguf "
        "and load merged.gguf, or pick a quant that is one file"
    )


def _hf_ref(r: HFRef, filename: str) -> str:
    """The ``hf:`` reference to one file of ``r``'s repository and revision."""
    return f"hf:{r.repo_id}" + (f"@{urllib.parse.quote(r.revision, safe='')}" if r.revision else "") + f"/{filename}"


def _hf_pick(ref: str, r: HFRef, cache: Path, snapshot: Path | None, missing: str) -> Path:
    """A quant tag or ``hf:OWNER/REPO``: the GGUF file chosen among the cached snapshot's, else among the
    repository's (and downloaded); ``hf:OWNER/REPO`` of a snapshot without GGUF files: the directory.

    A cached match of the tag (or of the default quant) is used with no network call. The default's other
    case, the only GGUF model file, is a fact about the repository, so the cache decides it only when no
    download may happen or the listing fails (a partial cache would make the answer depend on what was
    fetched before)."""
    blocked = _hf_no_download()
    fallback = None
    if snapshot is not None:
        cached = _gguf_models(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.[gG][gG][uU][fF]") if p.is_file())
        if not cached and not r.tag:
            return snapshot  # no GGUF model here: the snapshot directory, as before quant tags
        choice, candidates, why = _hf_choose(cached, r.tag)
        if choice is not None and (r.tag or blocked or _quant_matches(choice, HF_DEFAULT_QUANT)):
            _hf_refuse_split(ref, r, choice)
            return snapshot / choice
        if choice is None and why.startswith("several"):  # more files on the hub cannot make them fewer
            raise HubError(f"{ref}: {why} in {snapshot}: {_hf_listing(candidates)}; name one with its path ({_hf_ref(r, candidates[0])})")
        if choice is not None:
            fallback = snapshot / choice
            missing = f"{ref}: the cached snapshot {snapshot} holds one GGUF model file, {choice}, and no {HF_DEFAULT_QUANT} file"
        else:
            missing = f"{ref}: {why} among the cached GGUF files of {r.repo_id} in {snapshot} ({_hf_listing(candidates)})"
    if blocked:
        raise HubError(f"{missing}; {_hf_how_to_fetch(r, blocked)}")
    try:
        _hf_probe(r, missing)
        models = _gguf_models(_hf_list(ref, r, missing))
    except HubError as e:
        if fallback is None:
            raise
        log.warning("hub: %s; using the cached %s", e, fallback)
        _hf_refuse_split(ref, r, fallback.relative_to(snapshot).as_posix())
        return fallback
    if not models and not r.tag:
        raise HubError(
            f"{missing}; {r.repo_id} has no GGUF model file to pick, and a whole repository is never downloaded at run time; {_hf_how_to_fetch(r, '')}"
        )
    choice, candidates, why = _hf_choose(models, r.tag)
    if choice is None:
        raise HubError(
            f"{ref}: {why} in {r.repo_id} on the Hugging Face hub: {_hf_listing(candidates)}"
            + (f"; name one with its path ({_hf_ref(r, candidates[0])})" if candidates else "")
        )
    _hf_safe_path(ref, "path", choice)  # a name from the hub's listing, joined to the snapshot directory
    _hf_refuse_split(ref, r, choice)
    if snapshot is not None and (snapshot / choice).is_file():
        return snapshot / choice
    return _hf_download(ref, r, choice, cache, f"{ref}: {choice} of {r.repo_id} is not in the Hugging Face cache {cache}")


def hf_path(ref: str) -> Path:
    """The local file (or snapshot directory) an ``hf:`` reference names, from the Hugging Face hub cache.

    What is cached is returned without any network call. A file that is not is downloaded into the cache
    with huggingface_hub when it is installed and ``HF_HUB_OFFLINE`` is not set; otherwise, or when that
    fails, HubError names the exact path looked at and the ``hf download`` command that would fetch it.
    The revision defaults to ``main`` (resolved through ``refs/main``); a full commit hash names its
    snapshot directly. A quant tag (``hf:OWNER/REPO:Q4_K_M``) picks that GGUF file; see the notes above.
    """
    r = parse_hf(ref)
    cache, source = hf_cache_dir()
    repo_dir = cache / ("models--" + r.repo_id.replace("/", "--"))
    where = f"the Hugging Face cache {cache} (from {source})"
    revision = r.revision or "main"
    ref_file = repo_dir / "refs" / revision
    snapshot: Path | None = None
    missing = ""
    if not repo_dir.is_dir():
        missing = f"{ref}: {repo_dir} does not exist: no file of {r.repo_id} is in {where}"
    else:
        commit = revision
        if ref_file.is_file():
            try:
                commit = ref_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise HubError(f"{ref}: cannot read {ref_file}: {e}") from None
            if "/" in commit or commit in ("", ".", "..") or "\\" in commit or "\0" in commit:
                raise HubError(f"{ref}: {ref_file} holds {commit!r}, not a commit hash (a corrupt cache entry; {r.fetch_command} rewrites it)")
        snapshot = repo_dir / "snapshots" / commit
        if "/" in commit or not snapshot.is_dir():  # refs/pr/1 without its ref file is no snapshot name either
            looked = (
                f"{ref_file} does not exist and {snapshot} is no snapshot"
                if commit == revision
                else f"{ref_file} points at {commit}, but {snapshot} does not exist"
            )
            missing, snapshot = f"{ref}: revision {revision!r} of {r.repo_id} is not in {where}: {looked}", None
    if r.tag or not (r.filename or r.whole):
        return _hf_pick(ref, r, cache, snapshot, missing)
    if snapshot is not None:
        if not r.filename:
            return snapshot
        target = snapshot / r.filename
        if target.is_file() or target.is_dir():
            return target
        no_exist = repo_dir / ".no_exist" / snapshot.name / r.filename
        broken = " (a link whose blob is missing: an interrupted download?)" if target.is_symlink() else ""
        missing = f"{ref}: {target} is not in {where}{broken}"
    blocked = _hf_no_download()
    if snapshot is not None and blocked and no_exist.is_file():
        raise HubError(
            f"{ref}: the Hugging Face hub has no file {r.filename!r} in {r.repo_id} at {snapshot.name} "
            f"(recorded by huggingface_hub in {no_exist}); check the path in the repository's file list"
        )
    if not r.filename:
        blocked = "a whole repository snapshot is never downloaded at run time"
    if blocked:
        raise HubError(f"{missing}; {_hf_how_to_fetch(r, blocked)}")
    _hf_probe(r, missing)
    return _hf_download(ref, r, r.filename, cache, missing)
