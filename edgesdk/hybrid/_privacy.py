"""Private-data detectors and reversible redaction.

Every family the SDK knows is one row of :func:`builtin_detectors`: a candidate pattern and a
validator that answers *private* (True), *not private* (False) or *unsure* (:class:`Unsure`).
Validators check what can be checked -- Luhn for cards, ISO 7064 mod-97 and the national BBAN
structure for IBANs, python-stdnum's checksums for national identifiers, the numbering plans of
``phonenumbers`` for phones, :mod:`ipaddress` for IPs -- so ordinary numbers are not flagged. A
near-miss (an IBAN-shaped string whose checksum fails, a long digit run nothing can classify) is
*unsure*: it is reported with ``certain=False`` and the router treats it as private, so detection
fails closed.

A span always covers a whole item: digit patterns start and end only at the edges of digit runs,
each row looks at the text with what the rows above validated blanked out, and overlapping matches
are merged into their union, so a redaction never leaves part of an item on the wire.
"""

from __future__ import annotations

import functools
import importlib.resources
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import attrs
import phonenumbers
from stdnum import iban as _iban
from stdnum.br import cpf as _br_cpf
from stdnum.es import dni as _es_dni
from stdnum.es import nie as _es_nie
from stdnum.eu import vat as _eu_vat
from stdnum.exceptions import InvalidChecksum, InvalidComponent, ValidationError
from stdnum.fr import nir as _fr_nir
from stdnum.gb import vat as _gb_vat
from stdnum.in_ import aadhaar as _in_aadhaar
from stdnum.iso7064 import mod_97_10
from stdnum.it import codicefiscale as _it_cf
from stdnum.us import ssn as _us_ssn

__all__ = [
    "Span",
    "Unsure",
    "Findings",
    "Detector",
    "RegexDetector",
    "BUILTIN_DETECTORS",
    "DEFAULT_PHONE_REGIONS",
    "builtin_detectors",
    "check_phone_regions",
    "check_detectors",
    "find_private",
    "Redaction",
    "redact",
    "luhn_ok",
    "iban_ok",
]


# -- results -------------------------------------------------------------------------------------


@attrs.frozen
class Span:
    """A private item at ``text[start:end]``. ``certain`` is False for a near-miss that is kept
    private only to fail closed; ``note`` then says why, e.g. ``"possible IBAN (checksum fails)"``."""

    start: int
    end: int
    kind: str
    value: str
    certain: bool = True
    note: str = ""

    def describe(self) -> str:
        """The span's kind, or for an unsure one what it might be and where -- never its value."""
        if self.certain:
            return self.kind
        return f"{self.note or 'possible ' + self.kind} at {self.start}-{self.end}"


@attrs.frozen
class Unsure:
    """What a validator returns for a near-miss: private until proven otherwise."""

    note: str


class Findings(list):
    """What :func:`find_private` returns: a plain list of non-overlapping :class:`Span` in text
    order, plus the summary a router needs to explain its decision."""

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({s.kind for s in self}))

    @property
    def uncertain(self) -> bool:
        """True when some span is a near-miss (``certain=False``) rather than a validated item."""
        return any(not s.certain for s in self)

    def describe(self) -> str:
        """E.g. ``"email, iban; possible card number (Luhn check fails) at 12-31"``: kinds of the
        validated items, then each unsure one with its position. Never contains a value."""
        sure = ", ".join(sorted({s.kind for s in self if s.certain}))
        unsure = "; ".join(s.describe() for s in self if not s.certain)
        return "; ".join(part for part in (sure, unsure) if part)


# -- detectors -----------------------------------------------------------------------------------


class Detector(Protocol):
    kind: str

    def find(self, text: str) -> Iterable[Span]: ...


_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # it becomes a placeholder such as [PATIENT_ID_1]


def _kind_ok(instance, attribute, value):
    if not isinstance(value, str) or not _KIND.fullmatch(value):
        raise ValueError(f"detector kind must be a name such as 'patient_id' (letters, digits, _), got {value!r}")


def _compile(pattern) -> re.Pattern:
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a regex string or compiled pattern, got {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid detector pattern {pattern!r}: {exc}") from None


@attrs.frozen
class RegexDetector:
    """Flags matches of ``pattern`` as ``kind``.

    ``validate(value)``, when given, returns True (private), False (not private) or an
    :class:`Unsure` (a near-miss, reported with ``certain=False``). When it rejects the whole match,
    shorter cuts ending before one of the ``cuts`` characters are tried, longest first, because a
    greedy pattern can swallow the next word or number ("DE89 3704 ... 00 and more"). A validated
    cut beats an unsure longer one; otherwise the longest unsure cut is reported.
    ``mask_benign``: match against the text with dates, times and prices blanked out (so they
    cannot be read as phone numbers or identifiers). ``fallback``: match against the text with
    the items the detectors before this one validated blanked out, so it judges only what they
    left ("DE89 ... 00 12": the IBAN is validated, "12" alone is nothing). Offsets are unchanged.
    """

    kind: str = attrs.field(validator=_kind_ok)
    pattern: re.Pattern = attrs.field(converter=_compile)
    validate: Callable[[str], object] | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.is_callable()))
    cuts: str = attrs.field(default=" -", validator=attrs.validators.instance_of(str))
    mask_benign: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    fallback: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def find(self, text: str) -> Iterable[Span]:
        pos = 0
        while (m := self.pattern.search(text, pos)) is not None:
            span = self._judge(m.start(), m.group(0)) if m.end() > m.start() else None
            if span is None:
                pos = m.start() + 1
                continue
            yield span
            pos = span.end

    def _judge(self, start: int, value: str) -> Span | None:
        if self.validate is None:
            return Span(start, start + len(value), self.kind, value)
        unsure = None
        for cut in self._cuts(value):
            verdict = self.validate(cut)
            if isinstance(verdict, Unsure):
                unsure = unsure or (cut, verdict.note)
            elif verdict:
                return Span(start, start + len(cut), self.kind, cut)
        if unsure is None:
            return None
        cut, note = unsure
        return Span(start, start + len(cut), self.kind, cut, certain=False, note=note)

    def _cuts(self, value: str) -> Iterable[str]:
        yield value
        for i in range(len(value) - 1, 0, -1):
            if value[i] in self.cuts and value[i - 1] not in self.cuts:
                yield value[:i]


def check_detectors(detectors) -> tuple:
    """``detectors`` as a tuple, or a TypeError naming the entry that is not a detector."""
    if isinstance(detectors, (str, bytes)) or not isinstance(detectors, Iterable):
        raise TypeError(f"detectors must be a sequence of detectors, got {type(detectors).__name__}")
    detectors = tuple(detectors)
    for d in detectors:
        if not isinstance(getattr(d, "kind", None), str) or not callable(getattr(d, "find", None)):
            raise TypeError(f"{d!r} is not a detector: it needs a str 'kind' and a find(text) method")
    return detectors


# -- checksums and small helpers -------------------------------------------------------------------

_GAPS = " \u00a0\u2009\u202f-"  # what people (and word processors) put between digit groups
_GAP = f"[{_GAPS}]"


def _need_str(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def _ascii(s: str) -> str:
    """Any Unicode decimal digit (fullwidth, Arabic-Indic, ...) as its ASCII digit: the libraries
    validating these numbers only read ASCII, and a leak in another script is still a leak."""
    if s.isascii():
        return s
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c for c in s)


def _plain(s: str) -> str:
    return "".join(c for c in _ascii(s) if c not in _GAPS)


def luhn_ok(s: str) -> bool:
    """Luhn check of the 13-19 digits of a payment card number (separators ignored)."""
    _need_str("card number", s)
    digits = [int(c) for c in _ascii(s) if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(s: str) -> bool:
    """ISO 7064 mod-97 check of an IBAN in any case and spacing (the country's structure is not checked)."""
    _need_str("IBAN", s)
    s = _plain(s).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit() or not s.isalnum() or not s.isascii():
        return False
    return mod_97_10.is_valid(s[4:] + s[:4])


# -- validators, one per family ----------------------------------------------------------------


def _bban_layouts() -> dict[str, str]:
    """Country -> BBAN layout, one of n (digit), a (letter), c (either) per position, from
    stdnum's copy of the SWIFT registry: an IBAN is cut at exactly its country's length, and a
    near-miss is recognised by its shape."""
    data = importlib.resources.files("stdnum").joinpath("iban.dat").read_text(encoding="utf-8")
    return {
        cc: "".join(t * int(n) for n, t in re.findall(r"(\d+)!([nac])", bban)) for cc, bban in re.findall(r'^([A-Z]{2}) .*?bban="([^"]+)"', data, re.MULTILINE)
    }


_BBAN_LAYOUTS = _bban_layouts()
_BBAN_CLASS = {"n": str.isdigit, "a": str.isalpha, "c": str.isalnum}
# A near-miss may hold letters only where the BBAN must: "LU15027442 aaaaaaaa" is not a short IBAN.
_BBAN_NEAR = {**_BBAN_CLASS, "c": str.isdigit}


def _fits(bban: str, layout: str, classes=_BBAN_CLASS) -> bool:
    return len(bban) <= len(layout) and all(classes[t](ch) for ch, t in zip(bban, layout))


def _iban_verdict(value: str):
    c = _plain(value).upper()
    layout = _BBAN_LAYOUTS.get(c[:2])
    if layout is None or not c.isascii() or not _fits(c[4:], layout):
        return False
    if len(c) == 4 + len(layout):
        # Country checks (bank codes, national keys) would demote real IBANs of banks stdnum does not list.
        return True if _iban.is_valid(c, check_country=False) else Unsure("possible IBAN (checksum fails)")
    # Missing characters only: a longer candidate is an IBAN followed by something, which a cut finds.
    if len(c) >= 2 + len(layout) and _fits(c[4:], layout, _BBAN_NEAR):
        return Unsure(f"possible IBAN (too short for {c[:2]})")
    return False


def _card_verdict(value: str):
    if luhn_ok(value):
        return True
    groups = [len(g) for g in re.split(_GAP, value)]
    # Only the groupings cards are printed in: any other long digit run is the number detector's.
    card_like = groups in ([4, 6, 5], [4, 6, 4]) or (len(groups) >= 4 and all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4)
    return Unsure("possible payment card number (Luhn check fails)") if card_like else False


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] in "LM"


def _email_verdict(value: str):
    domain = re.split("[@\uff20]", value)[-1]
    if domain.startswith("["):
        return True
    labels = domain.split(".")
    if len(labels) < 2:
        # "anna@intranet": no public domain, but an address all the same.
        return Unsure("possible email address (no top-level domain)") if any(map(_is_letter, domain)) else False
    tld = labels[-1]
    tld_ok = len(tld) >= 2 and (tld.lower().startswith("xn--") or all(map(_is_letter, tld)))
    labels_ok = all(lb and not lb.startswith("-") and not lb.endswith("-") for lb in labels)
    return True if tld_ok and labels_ok else Unsure("possible email address (unusual domain)")


def _ip_verdict(value: str):
    v = _ascii(value)
    try:
        ipaddress.ip_network(v, strict=False) if "/" in v else ipaddress.ip_address(v)
        return True
    except ValueError:
        pass
    parts = v.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return Unsure("possible IP address (leading zeros)")
    return False


_THOUSANDS = re.compile(r"([1-9]\d{0,2})([ \u00a0\u2009\u202f])\d{3}(?:\2\d{3})+")


def _thousands_lead(value: str) -> int:
    """Digits in the first group of a number grouped in thousands ("7 900 000 000" -> 1), else 0."""
    m = _THOUSANDS.fullmatch(value)
    return len(m.group(1)) if m else 0


@functools.lru_cache(maxsize=64)
def _plan_hint(region: str) -> tuple[re.Pattern, str, str]:
    m = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return re.compile(m.general_desc.national_number_pattern), m.national_prefix or "", str(m.country_code)


def _may_be_national(digits: str, region: str) -> bool:
    """Cheap test that ``digits`` can be a number of ``region`` (its plan's overall pattern, with
    or without trunk prefix or country code): parsing is ~10x dearer and most regions fail this."""
    pattern, trunk, cc = _plan_hint(region)
    forms = [digits]
    forms += [digits[len(trunk) :]] if trunk and digits.startswith(trunk) else []
    forms += [digits[len(cc) :]] if digits.startswith(cc) else []
    return any(pattern.fullmatch(f) for f in forms)


@functools.lru_cache(maxsize=1024)
def _phone_valid(number: str, region: str | None) -> bool:
    """Valid in ``region``'s plan *and written as that region writes it*: national numbers need
    their trunk prefix ("030 ...", not "30 ...") or their country code, because without that rule
    almost any 9-11 digit number is valid somewhere ("2024 0517" is a German number)."""
    if region is not None and not _may_be_national(re.sub(r"\D", "", number), region):
        return False
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(parsed):
        return False
    if region is None:
        return True
    written = re.sub(r"\D", "", number)
    return any(
        written == re.sub(r"\D", "", phonenumbers.format_number(parsed, f))
        for f in (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.E164)
    )


def _phone_verdict(value: str, regions: tuple[str, ...]):
    v = _ascii(value)
    digits = sum(c.isdigit() for c in v)
    if "." in v and not v.startswith("+") and (any(len(g) < 2 for g in re.findall(r"\d+", v)) or re.search("[-/]", v)):
        # "10.0.19045.2965", "390.533.447-06": versions, builds and IPs have one-digit parts and
        # dotted identifiers mix separators; a dotted phone does neither.
        return False
    if v.startswith(("+", "00")):
        # An international number is judged by its own country code, whatever the hints say.
        if not 7 <= digits <= 17:
            return False
        number = "+" + v[2:] if v.startswith("00") else v
        return True if _phone_valid(number, None) else Unsure("possible phone number (invalid international number)")
    if not 7 <= digits <= 15:
        return False
    if v[0] not in "0(" and (digits < 9 or v.isdigit()):
        # A short or unformatted number without trunk prefix is a count, code or id far more often
        # than a phone (the number detector still keeps a long one private).
        return False
    if 0 < _thousands_lead(v) < 3:
        return False  # "7 900 000 000": no numbering plan groups a phone like this; "912 345 678" may be one
    return any(_phone_valid(v, r) for r in regions)


_NUMERAL = re.compile(r"\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?")


def _number_verdict(value: str):
    n = sum(c.isdecimal() for c in value)
    if n < 9 or _thousands_lead(value):  # "7 900 000 000" is a quantity
        return False
    if not value.isdecimal() and _NUMERAL.fullmatch(value) and _short_groups(value):
        return False  # a decimal, version or exponent
    return Unsure(f"possible identifier (unclassified {n}-digit number)")


def _short_groups(numeral: str) -> bool:
    """Versions have short parts and decimals a short integer part; "4111111111111111.4111..." has neither."""
    groups = re.split("[.,]", numeral)
    return all(len(g) <= 8 for g in (groups[:-1] if len(groups) == 2 else groups))


def _stdnum_verdict(label: str, validate: Callable[[str], object]):
    """A validator from a python-stdnum ``validate``: valid -> True; a failed checksum or an
    impossible component -> unsure; anything else -> not this identifier. A bare digit string that
    fails is left to the number detector: its shape alone does not say which identifier it is."""

    def verdict(value: str):
        plain = _plain(value)
        try:
            validate(plain)
            return True
        except (InvalidChecksum, InvalidComponent) as exc:
            if plain.isdigit() and plain == _ascii(value):
                return False
            why = "checksum fails" if isinstance(exc, InvalidChecksum) else "invalid component"
            return Unsure(f"possible {label} ({why})")
        except ValidationError:
            return False

    return verdict


def _vat_validate(number: str):
    return (_gb_vat if number[:2].upper() == "GB" else _eu_vat).validate(number)


def _es_id_validate(number: str):
    return (_es_nie if number[:1].upper() in "XYZ" else _es_dni).validate(number)


# -- patterns ------------------------------------------------------------------------------------

# Every pattern that starts or ends with a digit starts and ends at the edge of a digit run (never
# after "1 " or "3." or before " 5"), so a match is the whole item and no validated match can hide
# part of another item from the detectors that look at what is left. A run too long for a pattern is
# left to the number detector, which takes any length.
# "+" and "(" start a number wherever they are ("... 1112 (030) 1234 5678"); "+" never continues one.
_RUN_START = rf"(?<![\w+])(?:(?=[+(])|(?<!\d[.,:/{_GAPS}]))"
_RUN_END = rf"(?!\w)(?![.,:/{_GAPS}]\d)"

# Characters that end an address: whitespace, '@', brackets, quotes and sentence punctuation in the
# scripts people write addresses in. Anything else (letters of any script, combining marks, digits)
# may be part of one; a letter-by-letter Unicode class would cost ~0.1 s to build at import.
_STOP = (
    '\\s@\uff20<>()\\[\\]{}"\\\\,;:\u2018\u2019\u201c\u201d\u201e\u00ab\u00bb\u2039\u203a\u2026\u2013\u2014'
    "\u3001\u3002\uff0c\uff1a\uff1b\uff08\uff09\u300c\u300d\u300e\u300f\u3010\u3011\u060c\u061b\u0964"
)
_LOCAL = f"[^{_STOP}.]"
_LABEL = f"[^{_STOP}.!#$%&'*+/=?^`|~_]"
# No look-behind: the scan resumes right after the previous address, and the leftmost match from
# there starts at the first character an address may hold, so "x@a.com/y@b.com" gives both.
_EMAIL = rf"{_LOCAL}++(?:\.{_LOCAL}++)*+[@\uff20](?:{_LABEL}++(?:\.{_LABEL}++)*+|\[[0-9A-Fa-f:.]+\])"

_IBAN = rf"(?<![^\W_])[A-Za-z]{{2}}\d{{2}}(?:{_GAP}?[A-Za-z0-9]){{11,30}}(?![A-Za-z0-9])"
_CARD = rf"{_RUN_START}(?>\d(?:{_GAP}?\d){{12,18}}){_RUN_END}"
_IPV4 = r"(?<![\w.])(?>(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2}(?!\d))?)(?![\w]|\.\d)"
_IPV6 = (
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*[0-9A-Fa-f])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?>(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?:%[\w.-]+)?(?:/\d{1,3}(?!\d))?)(?![\w:]|\.\d)"
)
_PHONE_SEP = rf"[./{_GAPS}]"
# At most 25 characters ("+44 (0)20 7946 0958" has 19): a longer run is not one phone number
# (cutting one out of it could leave the rest of another on the wire); the number detector takes it.
_PHONE = rf"{_RUN_START}(?>\+?(?:\(\d{{1,5}}\)|\d)(?:\d|\(\d{{1,5}}\)|{_PHONE_SEP}(?=[\d(])){{0,24}}){_RUN_END}"
# The safety net, so it never refuses to look: words holding a digit ("100012A00100104", "(201)")
# joined by gaps, dots or commas, with no end condition, so every digit is in some match and a
# decimal, version or exponent ("3.14159265358979", "10.0.19045.2965", "6.02214076e23") is judged whole.
_NUMBER_WORD = r"\(?\w*\d\w*\)?"
_NUMBER = rf"(?<!\w)(?:(?=[+(])|(?<!\d[.,{_GAPS}]))(?>\+?{_NUMBER_WORD}(?:[.,{_GAPS}]{_NUMBER_WORD})*)"

_VAT_PREFIXES = "|".join(sorted({m.upper() for m in _eu_vat.MEMBER_STATES} | {"EL", "GB"}))
_NATIONAL = {
    # kind: (pattern, stdnum validate, label). Prefixes of VAT numbers are upper case as printed,
    # which keeps "de 2024 ..." or "at 12..." in prose from being read as one.
    "us_ssn": (rf"{_RUN_START}\d{{3}}([ -])\d{{2}}\1\d{{4}}{_RUN_END}", _us_ssn.validate, "US SSN"),
    "eu_vat": (rf"(?<![^\W_])(?:{_VAT_PREFIXES}) ?(?=[0-9A-Za-z]?\d)[0-9A-Za-z](?:[ .-]?[0-9A-Za-z]){{7,13}}(?![^\W_])", _vat_validate, "VAT number"),
    "es_dni": (rf"(?:{_RUN_START}\d{{8}}|(?<![^\W_])[XYZxyz]-?\d{{7}})-?[A-Za-z](?![^\W_])", _es_id_validate, "Spanish DNI/NIE"),
    "it_fiscal_code": (
        (
            r"(?<![^\W_])(?=\w*\d)[A-Za-z]{6}[0-9LMNP-Vlmnp-v]{2}[A-Za-z][0-9LMNP-Vlmnp-v]{2}[A-Za-z]"
            r"[0-9LMNP-Vlmnp-v]{3}[A-Za-z](?![^\W_])"
        ),
        _it_cf.validate,
        "Italian fiscal code",
    ),
    "fr_nir": (
        (
            rf"{_RUN_START}[12]{_GAP}?\d{{2}}{_GAP}?\d{{2}}{_GAP}?(?:\d{{2}}|2[ABab]){_GAP}?\d{{3}}{_GAP}?\d{{3}}"
            rf"{_GAP}?\d{{2}}{_RUN_END}"
        ),
        _fr_nir.validate,
        "French NIR",
    ),
    "br_cpf": (rf"{_RUN_START}\d{{3}}\.\d{{3}}\.\d{{3}}-\d{{2}}{_RUN_END}", _br_cpf.validate, "Brazilian CPF"),
    "in_aadhaar": (rf"{_RUN_START}[2-9]\d{{3}}({_GAP})\d{{4}}\1\d{{4}}{_RUN_END}", _in_aadhaar.validate, "Aadhaar number"),
}

# Not private, and blanked out before the phone and number detectors look: dates (ISO, d/m/y and
# m/d/y, with an optional time), times with fractions of a second, and amounts next to a currency.
_YEAR, _MONTH, _DAY = r"(?:19|20)\d{2}", r"(?:0?[1-9]|1[0-2])", r"(?:0?[1-9]|[12]\d|3[01])"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:\s?[AaPp]\.?[Mm]\.?)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_DATE = (
    rf"(?:{_YEAR}[-/.]{_MONTH}[-/.]{_DAY}|{_DAY}[-/.]{_MONTH}[-/.](?:{_YEAR}|\d{{2}})"
    rf"|{_MONTH}[-/.]{_DAY}[-/.](?:{_YEAR}|\d{{2}}))(?:(?:T|,?\s)(?:{_TIME}))?"
)
_AMOUNT = r"(?:\d{1,3}(?:[ ,.'\u00a0\u2009\u202f]\d{3})+|\d{1,2}(?:,\d{2})+,\d{3}|\d+)(?:[.,]\d{1,2}|,-)?"
_CURRENCY = r"(?:[$€£¥₹₽₩₪₫₴₦₱฿₺₿¢]|\b(?:USD|EUR|GBP|CHF|JPY|CNY|RMB|INR|CAD|AUD|NZD|SEK|NOK|DKK|PLN|CZK|HUF|BRL|MXN|ZAR|TRY|KRW|SGD|HKD)\b)"
_PRICE = rf"{_CURRENCY}\s?-?{_AMOUNT}|{_AMOUNT}\s?{_CURRENCY}"
# A mask never starts inside a digit run ("+34-810-12-30-00" holds the "date" 12-30-00) and an
# amount never ends inside one ("€50 0151 2345 6789"); a date may be followed by a number.
_BENIGN = re.compile(
    rf"(?<![\w+])(?<!\d[.,:/{_GAPS}])(?:(?:{_DATE}|{_TIME})(?!\w)(?![.,:/-]\d)"
    rf"|(?:{_PRICE})(?!\w)(?![.,:/{_GAPS}]\d))"
)


def _blank(text: str, spans: Iterable) -> str:
    """``text`` with each span's characters replaced by NUL -- neither a digit, a letter nor a
    separator, so no candidate runs through a blank -- keeping every offset."""
    chars = list(text)
    for sp in spans:
        chars[sp.start : sp.end] = "\0" * (sp.end - sp.start)
    return "".join(chars)


def _mask_benign(text: str) -> str:
    return _BENIGN.sub(lambda m: "\0" * (m.end() - m.start()), text)


# -- the table -----------------------------------------------------------------------------------

DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "BR", "JP", "CN", "AU")


def check_phone_regions(regions) -> tuple[str, ...]:
    """``regions`` as a tuple of upper-case region codes phonenumbers knows, or a clear error."""
    if isinstance(regions, str) or not isinstance(regions, Iterable):
        raise TypeError(f"phone_regions must be a sequence of region codes such as ('US', 'DE'), got {regions!r}")
    out = []
    for r in regions:
        code = r.upper() if isinstance(r, str) else r
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {r!r}: use ISO 3166 codes such as 'US', 'DE', 'IN'")
        out.append(code)
    return tuple(dict.fromkeys(out))


@functools.lru_cache(maxsize=16)
def _table(regions: tuple[str, ...]) -> tuple[RegexDetector, ...]:
    # Order is priority, strongest evidence first (a 15-digit NIR with its mod-97 key also passes
    # Luhn 1 time in 10). Each row looks only at what the rows above did not validate (fallback), so
    # an item right after another ("... B01 00000000T") is still seen as starting a run.
    row = functools.partial(RegexDetector, fallback=True)
    return (
        row("email", _EMAIL, _email_verdict, cuts=""),
        row("iban", _IBAN, _iban_verdict, cuts=_GAPS),
        *(row(kind, rx, _stdnum_verdict(label, check), cuts=" .-") for kind, (rx, check, label) in _NATIONAL.items()),
        row("card", _CARD, _card_verdict, cuts=""),
        row("ip", f"{_IPV4}|{_IPV6}", _ip_verdict, cuts=""),
        # Cut only at spaces: "98-7654321-00" is one token even if "98-7654321" is a valid phone.
        row("phone", _PHONE, functools.partial(_phone_verdict, regions=regions), cuts=" \u00a0\u2009\u202f", mask_benign=True),
        # Last, and fail-closed: any run of >= 9 digits that no row above validated stays private.
        row("number", _NUMBER, _number_verdict, cuts="", mask_benign=True),
    )


def builtin_detectors(phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> tuple[RegexDetector, ...]:
    """The built-in detectors, with national phone numbers read for ``phone_regions`` ("+"-prefixed
    international numbers are always read). Add your own with ``builtin_detectors() + (mine,)``."""
    return _table(check_phone_regions(phone_regions))


BUILTIN_DETECTORS = builtin_detectors()


# -- finding and redacting -------------------------------------------------------------------------


def find_private(text: str, detectors: Sequence[Detector] = BUILTIN_DETECTORS) -> Findings:
    """Non-overlapping private spans in ``text``, in order. Overlapping matches are merged into
    one span over their union; it takes the kind of the first detector (in ``detectors`` order)
    and is unsure when a near-miss in it is not inside a validated match."""
    _need_str("text", text)
    detectors = check_detectors(detectors)
    found: dict[tuple[int, int, int], tuple[int, Span]] = {}
    benign = _mask_benign(text) if any(getattr(d, "mask_benign", False) for d in detectors) else text
    # A digit run may not start right after "9 " (it would be the tail of another run), so an item
    # directly after one validated by a later row ("0.0.0.0 00000000T") is only seen once that one
    # is blanked: look again then. Each extra pass needs a new validated span, so this ends.
    for _ in range(len(text) + 1):
        new = _scan(text, benign, detectors, found)
        if not any(sp.certain and _touches_next(text, sp) for _, sp in new):
            break
    return Findings(_union(text, group) for group in _overlapping(list(found.values())))


def _scan(text: str, benign: str, detectors: tuple, found: dict) -> list[tuple[int, Span]]:
    """One pass of every detector; adds the spans not seen before to ``found`` and returns them."""
    new = []
    for rank, det in enumerate(detectors):
        source = benign if getattr(det, "mask_benign", False) else text
        if getattr(det, "fallback", False):
            source = _blank(source, (s for _, s in found.values() if s.certain))
        for sp in det.find(source):
            if not isinstance(sp, Span) or not 0 <= sp.start < sp.end <= len(text):
                raise ValueError(f"detector {det.kind!r} returned {sp!r}, not a non-empty Span inside the text")
            key = (rank, sp.start, sp.end)
            if key not in found:
                found[key] = (rank, attrs.evolve(sp, value=text[sp.start : sp.end]))
                new.append(found[key])
    return new


def _touches_next(text: str, sp: Span) -> bool:
    """Whether ``sp`` ends in a digit and is followed by one separator and a digit."""
    nxt = text[sp.end + 1 : sp.end + 2]
    return text[sp.end - 1].isdigit() and text[sp.end : sp.end + 1] in tuple(".,:/" + _GAPS) and nxt.isdecimal()


def _overlapping(found: list[tuple[int, Span]]) -> list[list[tuple[int, Span]]]:
    groups: list[list[tuple[int, Span]]] = []
    end = -1
    for item in sorted(found, key=lambda rs: (rs[1].start, rs[0])):
        if groups and item[1].start < end:
            groups[-1].append(item)
            end = max(end, item[1].end)
        else:
            groups.append([item])
            end = item[1].end
    return groups


def _union(text: str, group: list[tuple[int, Span]]) -> Span:
    # A redaction of only the first of two overlapping matches would leave the rest of the second
    # on the wire, hence the union.
    if len(group) == 1:
        return group[0][1]
    spans = [s for _, s in sorted(group, key=lambda rs: rs[0])]
    start, end = min(s.start for s in spans), max(s.end for s in spans)
    sure = [s for s in spans if s.certain]
    loose = [s for s in spans if not s.certain and not any(c.start <= s.start and s.end <= c.end for c in sure)]
    lead = loose[0] if loose else sure[0]
    return Span(start, end, lead.kind, text[start:end], certain=not loose, note=lead.note)


@attrs.frozen
class Redaction:
    """Text with private spans replaced by typed placeholders, and the way back."""

    text: str
    mapping: dict = attrs.field(eq=False, repr=False)  # placeholder -> original value
    kinds: tuple[str, ...]

    def restore(self, text: str) -> str:
        """Put the original values back wherever the placeholders appear (e.g. in a cloud answer)."""
        _need_str("text", text)
        if not self.mapping:
            return text
        pattern = re.compile("|".join(re.escape(k) for k in sorted(self.mapping, key=len, reverse=True)))
        return pattern.sub(lambda m: self.mapping[m.group(0)], text)


def redact(text: str, spans: Sequence[Span]) -> Redaction:
    """Replace each span by ``[KIND_n]``; the same value always gets the same placeholder.
    ``spans`` must not overlap and must come from ``text`` (as :func:`find_private` returns them)."""
    _need_str("text", text)
    ordered = sorted(spans, key=lambda s: s.start)
    _check_spans(text, ordered)
    out, pos, by_value, counts = [], 0, {}, {}
    for sp in ordered:
        out.append(text[pos : sp.start])
        key = (sp.kind, sp.value)
        if key not in by_value:
            counts[sp.kind] = counts.get(sp.kind, 0) + 1
            by_value[key] = f"[{sp.kind.upper()}_{counts[sp.kind]}]"
        out.append(by_value[key])
        pos = sp.end
    out.append(text[pos:])
    mapping = {ph: value for (kind, value), ph in by_value.items()}
    return Redaction("".join(out), mapping, tuple(sorted({s.kind for s in ordered})))


def _check_spans(text: str, ordered: list[Span]) -> None:
    end = 0
    for sp in ordered:
        if not isinstance(sp, Span):
            raise TypeError(f"spans must be Span objects, got {type(sp).__name__}")
        if not 0 <= sp.start < sp.end <= len(text) or text[sp.start : sp.end] != sp.value:
            raise ValueError(f"span {sp.start}-{sp.end} ({sp.kind}) does not match the text: spans must come from it")
        if sp.start < end:
            raise ValueError(f"spans overlap at {sp.start}-{end}: merge them first (find_private returns merged spans)")
        end = sp.end
