"""Privacy detectors fail closed: every family in many spellings is found whole, never survives
``redact`` and never leaves the device under ``strict``; near-misses are kept private and named;
ordinary dates, times, prices and versions are not flagged (the false-positive rate is printed)."""

import pathlib
import random
import types
import unicodedata

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum import luhn, verhoeff
from stdnum.in_ import aadhaar
from stdnum.iso7064 import mod_11_10
from stdnum.it import codicefiscale

from edgesdk.hybrid import (
    Orchestrator,
    Policy,
    RegexDetector,
    Span,
    find_private,
    redact,
)
from edgesdk.hybrid._privacy import (
    _BBAN_LAYOUTS,
    BUILTIN_DETECTORS,
    DEFAULT_PHONE_REGIONS,
    Findings,
    Redaction,
    Unsure,
    builtin_detectors,
)

DATA = pathlib.Path(__file__).parent / "data"
SHAKESPEARE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare-20k.txt"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies: each family in many spellings -------------------------------------------------------


def digits(n):
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


def grouped(s, sep, n=4):
    return sep.join(s[i : i + n] for i in range(0, len(s), n))


SCRIPTS = [
    "abcdefghijklmnopqrstuvwxyzàáâäãåæçèéêëìíîïñòóôöøùúûüýÿßœłśżźćńęąőűğış",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "абвгдежзийклмнопрстуфхцчшщыьэюя",
    "山田太郎用户例子中文日本語",
    "रामउदाहरणभारतकखगहिन्दी",
    "محمدعليمثال",
    "0123456789",
]
WORD = st.sampled_from(SCRIPTS).flatmap(lambda chars: st.text(alphabet=chars, min_size=1, max_size=8))
LABEL = st.one_of(
    WORD,
    st.builds(lambda a, b: f"{a}-{b}", WORD, WORD),
    st.builds(lambda s: "xn--" + s, st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=2, max_size=10)),
)
TLD = st.sampled_from(["com", "de", "es", "io", "museum", "co.uk", "рф", "中国", "भारत", "xn--p1ai", "xn--fiqs8s", "ελ"])
CASE = st.sampled_from([str, str.upper, str.lower, str.title, str.swapcase])


@st.composite
def emails(draw):
    local = ".".join(draw(st.lists(WORD, min_size=1, max_size=3)))
    if draw(st.booleans()):
        local += "+" + draw(WORD)
    domain = ".".join(draw(st.lists(LABEL, min_size=1, max_size=3)) + [draw(TLD)])
    address = draw(CASE)(f"{local}@{domain}")
    return unicodedata.normalize(draw(st.sampled_from(["NFC", "NFD"])), address)


@st.composite
def ibans(draw):
    cc = draw(st.sampled_from(sorted(_BBAN_LAYOUTS)))
    pools = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    bban = "".join(draw(st.sampled_from(pools[t])) for t in _BBAN_LAYOUTS[cc])
    value = cc + stdnum_iban.calc_check_digits(cc + "00" + bban) + bban
    sep = draw(st.sampled_from(["", " ", "-", "\u00a0"]))
    return draw(st.sampled_from([str, str.lower, str.title]))(grouped(value, sep) if sep else value)


CARD_BRANDS = [
    ("4", 16),
    ("4", 13),
    ("4", 19),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("35", 16),
    ("36", 14),
    ("62", 18),
]


@st.composite
def cards(draw):
    prefix, length = draw(st.sampled_from(CARD_BRANDS))
    body = prefix + draw(digits(length - len(prefix) - 1))
    number = body + luhn.calc_check_digit(body)
    style = draw(st.sampled_from(["compact", " ", "-", "\u00a0", "amex"]))
    if style == "compact":
        return number
    if style == "amex" and length == 15:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    return grouped(number, " " if style == "amex" else style)


PHONE_REGIONS = list(DEFAULT_PHONE_REGIONS) + ["MX", "PL", "SE", "CH", "ZA", "KR", "TR", "PT", "IE", "RU", "NG", "EG"]


@st.composite
def phones(draw):
    region = draw(st.sampled_from(PHONE_REGIONS))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    nsn = phonenumbers.national_significant_number(example)
    tail = draw(digits(3))
    candidate = phonenumbers.parse("+" + str(example.country_code) + nsn[:-3] + tail)
    number = candidate if phonenumbers.is_valid_number(candidate) else example
    formats = [phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164]
    if region in DEFAULT_PHONE_REGIONS:
        formats.append(phonenumbers.PhoneNumberFormat.NATIONAL)
    text = phonenumbers.format_number(number, draw(st.sampled_from(formats)))
    if text.startswith("+") and " " in text:  # the separators people use instead of spaces
        text = text.replace(" ", draw(st.sampled_from([" ", "-", "\u00a0", "."])))
    return text


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _cpf(nine):
    d1 = (11 - sum((10 - i) * int(nine[i]) for i in range(9))) % 11 % 10
    d2 = (11 - sum((11 - i) * int(nine[i]) for i in range(9)) - 2 * d1) % 11 % 10
    n = f"{nine}{d1}{d2}"
    return f"{n[:3]}.{n[3:6]}.{n[6:9]}-{n[9:]}"


def _nir(sex, yy, mm, dept, commune, order, spaced):
    body = f"{sex}{yy:02d}{mm:02d}{dept}{commune:03d}{order:03d}"
    n = body + f"{97 - int(body.replace('2A', '19').replace('2B', '18')) % 97:02d}"
    return " ".join([n[0], n[1:3], n[3:5], n[5:7], n[7:10], n[10:13], n[13:]]) if spaced else n


def _fiscal_code(name, yy, month, day, town, case):
    body = f"{name}{yy:02d}{month}{day:02d}{town}"
    return case(body + codicefiscale.calc_check_digit(body))


def _aadhaar(first, rest, sep):
    body = first + rest
    return grouped(body + verhoeff.calc_check_digit(body), sep)


def _de_vat(body, sep):
    return f"DE{sep}{body}{mod_11_10.calc_check_digit(body)}"


def _fr_vat(siren8, sep):
    siren = siren8 + luhn.calc_check_digit(siren8)
    return f"FR{sep}{(12 + 3 * (int(siren) % 97)) % 97:02d}{sep}{siren}"


UPPER_OR_LOWER = st.sampled_from([str.upper, str.lower])
NATIONAL = {
    "us_ssn": st.builds(
        lambda a, g, s, sep: f"{a:03d}{sep}{g:02d}{sep}{s:04d}",
        st.integers(1, 899).filter(lambda a: a != 666),
        st.integers(1, 99),
        st.integers(1, 9999),
        st.sampled_from(["-", " "]),
    ),
    "es_dni": st.one_of(
        st.builds(lambda n, sep, case: case(f"{n:08d}{sep}{DNI_LETTERS[n % 23]}"), st.integers(0, 99999999), st.sampled_from(["", "-"]), UPPER_OR_LOWER),
        st.builds(lambda p, n, case: case(f"{'XYZ'[p]}{n:07d}{DNI_LETTERS[(p * 10**7 + n) % 23]}"), st.integers(0, 2), st.integers(0, 9999999), UPPER_OR_LOWER),
    ),
    "it_fiscal_code": st.builds(
        _fiscal_code,
        st.text(alphabet="BCDFGHLMNPRSTVZ", min_size=6, max_size=6),
        st.integers(0, 99),
        st.sampled_from("ABCDEHLMPRST"),
        st.one_of(st.integers(1, 28), st.integers(41, 68)),
        st.sampled_from(["A562", "F205", "H501", "L219", "D969"]),
        UPPER_OR_LOWER,
    ),
    "fr_nir": st.builds(
        _nir,
        st.sampled_from("12"),
        st.integers(0, 99),
        st.integers(1, 12),
        st.sampled_from(["01", "13", "33", "59", "69", "75", "93", "2A", "2B"]),
        st.integers(1, 990),
        st.integers(1, 999),
        st.booleans(),
    ),
    "br_cpf": st.builds(_cpf, digits(9).filter(lambda s: len(set(s)) > 1)),
    "in_aadhaar": st.builds(_aadhaar, st.sampled_from("23456789"), digits(10), st.sampled_from([" ", "-"])).filter(aadhaar.is_valid),
    "eu_vat": st.one_of(
        st.builds(_de_vat, digits(8).filter(lambda s: s[0] != "0"), st.sampled_from(["", " "])),
        st.builds(_fr_vat, digits(8), st.sampled_from(["", " "])),
        st.sampled_from(
            [
                "NL004495445B01",
                "ATU13585627",
                "IT00743110157",
                "BE0428759497",
                "ESA28015865",
                "DK13585628",
                "PL8567346215",
                "SE556188840401",
                "GB980780684",
                "IE6388047V",
                "EL094259216",
                "LU15027442",
            ]
        ),
    ),
}


@st.composite
def ips(draw):
    addr = draw(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
    if addr.version == 6 and not any(c in "123456789abcdef" for c in str(addr)):
        addr = addr.__class__(int(addr) | 1)  # "::" alone carries nothing; give it a host part
    text = draw(st.sampled_from([str, lambda a: a.exploded, lambda a: str(a).upper()]))(addr)
    return text + draw(st.sampled_from(["", f"/{24 if addr.version == 4 else 64}"]))


FAMILIES = {"email": emails(), "iban": ibans(), "card": cards(), "phone": phones(), "ip": ips(), **NATIONAL}
ANY_ITEM = st.one_of([st.tuples(st.just(kind), strat) for kind, strat in FAMILIES.items()])
FILLER = st.text(alphabet=st.sampled_from(list("abcdefghij klmnop,!?")), max_size=20)
AFTER = st.sampled_from(["", ".", ",", "!", "?", ")", ";"])


def covering(spans, start, end):
    return [s for s in spans if s.start <= start and end <= s.end]


# -- properties -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_each_family_is_found_whole_and_validated(kind):
    @SETTINGS
    @given(value=FAMILIES[kind], before=FILLER, after=AFTER, tail=FILLER)
    def check(value, before, after, tail):
        text = f"{before} {value}{after} {tail}"
        start = len(before) + 1
        spans = find_private(text)
        cover = covering(spans, start, start + len(value))
        assert cover, f"{value!r} not covered in {text!r}: {spans}"
        assert cover[0].certain and cover[0].kind == kind, (value, cover)

    check()


@SETTINGS
@given(items=st.lists(st.tuples(FILLER, ANY_ITEM, AFTER), min_size=1, max_size=4), tail=FILLER)
def test_redaction_never_leaves_an_item_and_round_trips(items, tail):
    text = "".join(f"{f} {value}{after} " for f, (_, value), after in items) + tail
    red = redact(text, find_private(text))
    for _, (_, value), _ in items:
        assert value not in red.text, f"{value!r} leaked into {red.text!r}"
    assert red.restore(red.text) == text


REPLY = types.SimpleNamespace(text="ok", tokens_in=1, tokens_out=1, model="fake")  # duck-typed CloudReply


@SETTINGS
@given(items=st.lists(ANY_ITEM, min_size=2, max_size=4), sep=st.sampled_from([" ", ", ", "; ", " / ", " - ", "\n", ". "]))
def test_items_written_next_to_each_other_are_each_redacted(items, sep):
    # A digit run may not start right after another ("... 0 00000000T"): the neighbour must still be seen.
    text = sep.join(value for _, value in items)
    red = redact(text, find_private(text))
    for _, value in items:
        assert value not in red.text, f"{value!r} leaked into {red.text!r}"


class RecordingCloud:
    """A cloud that records what reaches it (for either client method the orchestrator uses)."""

    available = True
    unavailable_reason = None

    def __init__(self):
        self.sent = []

    def chat(self, messages, **kw):
        self.sent.append(messages)
        return REPLY

    def chat_stream(self, messages, **kw):
        self.sent.append(messages)
        return _Stream()


class _Stream:
    reply = REPLY

    def __iter__(self):
        yield "ok"

    def close(self):
        pass


class EmptyDevice:
    """Answers nothing, so every request would be escalated if the policy allowed it."""

    def generate(self, *a, **k):
        return ""

    def generate_stream(self, *a, **k):
        yield from ()


def _route(text, privacy):
    cloud = RecordingCloud()
    orch = Orchestrator(EmptyDevice(), cloud, Policy(privacy=privacy))
    answer = orch.generate(text)
    if privacy == "strict":
        answer.escalate()  # the "send to cloud" button must be refused too
    return answer, [m["content"] for msgs in cloud.sent for m in msgs]


@SETTINGS
@given(items=st.lists(st.tuples(FILLER, ANY_ITEM), min_size=1, max_size=3))
def test_strict_never_sends_and_redact_never_leaks(items):
    text = " ".join(f"{f} {value}" for f, (_, value) in items)
    answer, sent = _route(text, "strict")
    assert sent == [] and answer.route == "device"
    assert any("private data" in r for r in answer.reasons)
    _, sent = _route(text, "redact")
    assert sent, "redact mode should have asked the cloud"
    for _, (_, value) in items:
        assert all(value not in body for body in sent), f"{value!r} reached the cloud"


# -- the adversarial corpus ---------------------------------------------------------------------------


def _corpus():
    rows = []
    for line in (DATA / "privacy_corpus.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            kind, marked = line.split("\t")
            start, end = marked.index("⟦"), marked.index("⟧") - 1
            rows.append((kind, marked.replace("⟦", "").replace("⟧", ""), start, end))
    return rows


CORPUS = _corpus()


def test_corpus_is_large_and_covers_every_family():
    kinds = {k.rstrip("?") for k, *_ in CORPUS}
    assert len(CORPUS) >= 200
    assert set(FAMILIES) <= kinds and any(k.endswith("?") for k, *_ in CORPUS)


@pytest.mark.parametrize("kind,text,start,end", CORPUS, ids=[f"{i}-{k}" for i, (k, *_) in enumerate(CORPUS)])
def test_corpus_item_is_found_whole_redacted_and_kept_home(kind, text, start, end):
    spans = find_private(text)
    cover = covering(spans, start, end)
    assert cover, f"{text[start:end]!r} not covered: {spans}"
    unsure, want = kind.endswith("?"), kind.rstrip("?")
    assert cover[0].certain is not unsure and (not want or cover[0].kind == want), cover[0]
    assert text[start:end] not in redact(text, spans).text
    answer, sent = _route(text, "strict")
    assert sent == [] and answer.route == "device"


# -- near-misses, merging, options, validation --------------------------------------------------------


@pytest.mark.parametrize(
    "text,reason",
    [
        ("pay DE00 3704 0044 0532 0130 00 now", "possible IBAN (checksum fails) at 4-31"),
        ("iban DE89 3704 0044 0532 0130 0", "possible IBAN (too short for DE) at 5-31"),
        ("card 4111 1111 1111 1112", "possible payment card number (Luhn check fails) at 5-24"),
        ("ref 1234 5678 9012", "possible identifier (unclassified 12-digit number) at 4-18"),
        ("call +1 555 0100 999", "possible phone number (invalid international number) at 5-20"),
        ("dni 54362315Z", "possible Spanish DNI/NIE (checksum fails) at 4-13"),
        ("ssn 123-00-4567 please", "possible US SSN (invalid component) at 4-15"),
        ("mail root@buildhost", "possible email address (no top-level domain) at 5-19"),
    ],
)
def test_near_misses_are_kept_private_and_explained(text, reason):
    found = find_private(text)
    assert isinstance(found, Findings) and found.uncertain
    assert found.describe() == reason
    assert "[" in redact(text, found).text  # redact mode fails closed too


def test_the_issue_examples():
    for text in [
        "draft a note to anna@müller.de",
        "… josé.garcía@empresa.es",
        "… Zoë.Quinn@Example.COM",
        "iban de89370400440532013000",
        "iban de89 3704 0044 0532 0130 00",
    ]:
        (span,) = find_private(text)
        assert span.certain and text.endswith(span.value), (text, span)
    assert find_private("2024-05-17") == []


def test_overlapping_matches_are_merged_into_their_union():
    a, b = RegexDetector("alpha", r"abc"), RegexDetector("beta", r"cde", validate=lambda v: True)
    (span,) = find_private("xx abcde yy", (a, b))
    assert (span.start, span.end, span.kind, span.value) == (3, 8, "alpha", "abcde")
    assert redact("xx abcde yy", [span]).text == "xx [ALPHA_1] yy"
    # A validated item absorbs a near-miss inside it; one that sticks out makes the union unsure.
    sure = RegexDetector("sure", r"abcd")
    loose = RegexDetector("loose", r"bc|de", validate=lambda v: Unsure("maybe"))
    assert find_private("abcd", (sure, loose))[0].certain
    (merged,) = find_private("abcde", (sure, loose))
    assert not merged.certain and merged.kind == "loose" and merged.value == "abcde"


def test_phone_regions_are_a_policy_option():
    text = "ring 12 345 67 89 tonight"  # a Polish national number
    default = find_private(text, Policy().detectors)
    polish = find_private(text, Policy(phone_regions=("pl",)).detectors)
    assert [(s.kind, s.certain) for s in default] == [("number", False)]
    assert [(s.kind, s.certain, s.value) for s in polish] == [("phone", True, "12 345 67 89")]
    assert find_private("call +48 12 345 67 89", builtin_detectors(()))[0].kind == "phone"  # "+" always
    assert Policy().detectors == BUILTIN_DETECTORS
    with pytest.raises(ValueError, match="unknown phone region"):
        Policy(phone_regions=("XX",))
    with pytest.raises(TypeError, match="sequence of region codes"):
        Policy(phone_regions="US")
    with pytest.raises(TypeError, match="not a detector"):
        Policy(detectors=(object(),))


def test_unicode_digits_and_separators():
    for text in ["card ４１１１ １１１１ １１１１ １１１１", "card 4111\u00a01111\u00a01111\u00a01111", "card 4111-1111-1111-1111"]:
        (span,) = find_private(text)
        assert span.kind == "card" and span.certain and span.start == 5 and span.end == len(text)


def test_public_entries_validate_their_input():
    with pytest.raises(TypeError, match="text must be a str"):
        find_private(b"anna@example.com")
    with pytest.raises(TypeError, match="sequence of detectors"):
        find_private("x", 5)
    with pytest.raises(ValueError, match="detector kind"):
        RegexDetector("not a name", r"x")
    with pytest.raises(ValueError, match="invalid detector pattern"):
        RegexDetector("x", r"(")
    with pytest.raises(TypeError):
        RegexDetector("x", r"y", validate="not callable")
    text = "ab cd"
    with pytest.raises(ValueError, match="overlap"):
        redact(text, [Span(0, 2, "a", "ab"), Span(1, 3, "a", "b ")])
    with pytest.raises(ValueError, match="does not match the text"):
        redact(text, [Span(0, 2, "a", "zz")])
    with pytest.raises(TypeError, match="text must be a str"):
        Redaction("x", {}, ()).restore(None)

    class Broken:
        kind = "broken"

        def find(self, text):
            yield Span(0, 99, "broken", "x")

    with pytest.raises(ValueError, match="'broken' returned"):
        find_private("short", (Broken(),))


def test_strict_reason_names_the_uncertain_item():
    answer, sent = _route("pay DE00 3704 0044 0532 0130 00 now", "strict")
    assert sent == [] and any("possible IBAN (checksum fails) at 4-31" in r for r in answer.reasons)


# -- false positives ------------------------------------------------------------------------------------


def _lines(path):
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


def test_dates_times_prices_versions_are_not_private():
    lines = _lines(DATA / "privacy_benign.txt")
    flagged = [(ln, [(s.kind, s.value) for s in find_private(ln)]) for ln in lines if find_private(ln)]
    print(f"\n[privacy] benign numerals: {len(flagged)}/{len(lines)} lines flagged ({len(flagged) / len(lines):.1%})")
    assert len(lines) >= 100 and flagged == []


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="shared tinyshakespeare text not present")
def test_false_positive_rate_on_shakespeare():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    spans = find_private(text)
    flagged_lines = sum(1 for ln in lines if find_private(ln))
    print(
        f"\n[privacy] tinyshakespeare ({len(text)} chars, {len(lines)} lines): {len(spans)} detections, "
        f"{flagged_lines} lines flagged ({flagged_lines / len(lines):.2%}), "
        f"{len(spans) / (len(text) / 1000):.3f} per 1000 characters"
    )
    assert len(spans) <= 2 and flagged_lines <= 2


def test_random_digit_free_prose_is_never_flagged():
    rnd = random.Random(0)
    words = SHAKESPEARE.read_text(encoding="utf-8").split() if SHAKESPEARE.exists() else ["word"] * 10
    text = " ".join(rnd.choice(words) for _ in range(3000))
    assert find_private(text) == []
