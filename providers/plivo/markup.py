"""What Plivo is served: the dial-up, confirmSound (briefing), dialMusic (hold) and Dial
action XML, and the signed URL contexts that let those routes answer with Redis down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from plivo import plivoxml

from providers import accounts
from providers.accounts import provider_settings
from providers.base import callback_url, key_prompt, record_of, screening_key, sip_headers
from providers.plivo.account import PlivoSettings
from shared.config import Settings
from shared.contracts import GROUP_SEPARATOR
from shared.phone import is_sip
from shared.store import Transfer, ring_timeout

DIAL_UP_PATH = "/plivo/dial-up"
DIAL_ACTION_PATH = "/plivo/dial-action"
DIAL_CALLBACK_PATH = "/plivo/dial-callback"
WHISPER_PATH = "/plivo/whisper"
HOLD_PATH = "/plivo/hold"

APOLOGY = "Sorry, we could not connect you to an agent right now. Please call again later."

# What a steering URL carries (record field names, so the XML builders take either the
# record or the context): all the dial-up, the dial action, the confirmSound and the
# dialMusic need to answer without Redis. Never the summary (the human gets a generic
# briefing while Redis is down) and never anything secret.
CONTEXT_FIELDS = ("destinations", "attempt", "outbound_number", "caller_number",
                  "ring_timeouts", "screening", "screening_key", "screening_timeout",
                  "hold_audio", "confirm_timeout", "briefing", "extensions", "sip_headers")


@lru_cache(maxsize=8)
def _context_key(secret: str) -> bytes:
    # A key of its own, derived, so that the MAC never doubles as a Plivo signature.
    return hmac.new(secret.encode(), b"warm-transfer plivo url context v1",
                    hashlib.sha256).digest()


def _context_secret(settings: Settings) -> str:
    """WEBHOOK_HMAC_KEY, else the default account's token (the context is ours, whichever
    account the call is on)."""
    if settings.webhook_hmac_key:
        return settings.webhook_hmac_key
    account = accounts.find(settings, "plivo")
    return account.secret("auth_token") if account is not None else ""


def _mac(settings: Settings, path: str, transfer_id: str, attempt: str, payload: str,
         account: str = "") -> str:
    key = _context_key(_context_secret(settings))
    # The account is covered: a URL cannot be moved to another account's callbacks.
    scope = f"\n{account}" if account and account != accounts.DEFAULT else ""
    message = f"{path}\n{transfer_id}\n{attempt}\n{payload}{scope}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]  # 128 bits
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def context_record(ctx: Mapping[str, str]) -> Transfer:
    """A signed context read as a record: its fields are the record's, in the record's
    string form (the two a record lacks, `briefing` and `confirm_timeout`, land in extra)."""
    return record_of(ctx)


def _as_record(transfer: Transfer | Mapping[str, str] | None) -> Transfer | None:
    """What the routes hand over: a record, or a signed context (Redis down)."""
    return None if transfer is None else record_of(transfer)


def dial_context(transfer: Transfer) -> dict[str, str]:
    """The context of a transfer record (or of a context read as one), for a signed URL:
    the record's own strings (see Transfer.to_hash)."""
    raw = {**transfer.to_hash(), **transfer.extra}
    ctx = {k: raw[k] for k in CONTEXT_FIELDS if raw.get(k)}
    if ctx.get("attempt") == "0":
        del ctx["attempt"]  # the defaults, left out to keep the URLs short
    if "sip:" in ctx.get("destinations", "") and transfer.lead_id:
        ctx["lead_id"] = transfer.lead_id  # X-Lead-Id of a SIP destination
    if ctx.get("ring_timeouts") in ("[]", "[0]"):
        del ctx["ring_timeouts"]
    if not ctx.get("screening"):
        ctx.pop("screening_key", None)
        ctx.pop("screening_timeout", None)
    if transfer.summary:
        ctx["briefing"] = "1"
    if ctx.get("screening") or ctx.get("briefing"):
        ctx["confirm_timeout"] = str(confirm_timeout(transfer))
    return ctx


def _payload(transfer: Transfer) -> str:
    return base64.urlsafe_b64encode(json.dumps(
        dial_context(transfer), separators=(",", ":"), sort_keys=True).encode()
    ).rstrip(b"=").decode()


def signed_query(settings: Settings, path: str, transfer: Transfer,
                 payload: str | None = None) -> str:
    """`transfer_id`, `attempt` and the signed context `t`, for one of our steering URLs
    (`payload`: the transfer's context already encoded, when several URLs share it)."""
    attempt = str(transfer.attempt)
    payload = payload or _payload(transfer)
    tid = transfer.transfer_id
    account = transfer.account
    query = f"transfer_id={quote(tid, safe='')}"
    if attempt != "0":
        query += f"&attempt={attempt}"
    if account and account != accounts.DEFAULT:
        query += f"&account={quote(account, safe='')}"
    return f"{query}&t={payload}.{_mac(settings, path, tid, attempt, payload, account)}"


class BadContext(ValueError):
    """A signed context that does not verify: not a URL we made."""


def read_context(settings: Settings, path: str, transfer_id: str, attempt: str,
                 token: str, account: str = "") -> dict[str, str] | None:
    """The context a steering URL carries (None when it carries none: a URL made before
    contexts existed); BadContext when its MAC does not match."""
    if not token:
        return None
    payload, _, mac = token.partition(".")
    if not hmac.compare_digest(mac.encode(), _mac(settings, path, transfer_id, attempt or "0",
                                                  payload, account).encode()):
        raise BadContext("context MAC mismatch")
    try:
        raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError as exc:
        raise BadContext("context not decodable") from exc
    if not isinstance(raw, dict):
        raise BadContext("context not an object")
    context = {**{str(k): str(v) for k, v in raw.items()}, "transfer_id": transfer_id}
    if account and account != accounts.DEFAULT:
        context["account"] = account
    return context


def _url(settings: Settings, path: str, transfer: Transfer) -> str:
    """A status callback URL: the transfer and destination it is about, nothing to sign."""
    return callback_url(settings, path, transfer.transfer_id, transfer.attempt,
                        account=transfer.account)


def steering_url(settings: Settings, path: str, transfer: Transfer,
                 payload: str | None = None) -> str:
    return settings.public_url(path) + "?" + signed_query(settings, path, transfer, payload)


def destination(transfer: Transfer | Mapping[str, str]) -> str:
    """The number of the transfer's (or signed context's) current attempt ('' when there is
    none)."""
    record = _as_record(transfer)
    return record.destination if record else ""


# How long the confirmSound takes to speak, estimated on the slow side. Plivo starts
# confirmTimeout when the human answers ("Timeout starts after the call is answered",
# plivo.com/docs/voice/xml/dial), so the briefing and the prompt are spoken inside it; the
# human must still have the whole screening_timeout once the prompt has ended.
# - 10 characters a second is about 105 words a minute (5.7 characters a word, spaces
#   included): slower than the ~150 words a minute of conversational English and of the
#   Amazon Polly voices behind <Speak> (plivo.com/docs/voice/concepts/ssml), so a slow
#   voice or a slow reading of numbers still fits.
# - Half a second per <Speak> for the pause around each one.
# - 2 s before the first word: Plivo fetches the confirmSound from us after the answer and
#   synthesises it.
SPEECH_CHARS_PER_SECOND = 10.0
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
PAUSE_PER_SPEAK = 0.5
CONFIRM_SOUND_LATENCY = 2.0
# Plivo's own default confirmTimeout is 120 s; a 1000-character summary at the rate above
# with a 60 s screening timeout needs 165. Past 180 s nobody is listening any more.
MAX_CONFIRM_TIMEOUT = 180
# After confirmTimeout, how long before a still-standing Dial is taken as bridged: Plivo
# ending the human's leg and posting the Dial action takes a moment.
CONFIRM_GRACE = 2.0


def briefing_texts(transfer: Transfer | None) -> list[str]:
    """The <Speak>s of the confirmSound: the briefing (the summary is the AI's note, not
    ours to vouch for), then the screening prompt."""
    texts: list[str] = []
    if transfer is None:
        return texts
    if transfer.summary:
        # Control characters are not XML (the SDK's lxml raises on them): a whisper that
        # answered 500 would leave the human's leg without its confirmSound.
        summary = _CONTROL.sub(" ", transfer.summary)
        texts.append(f"Incoming transfer. Note from the AI assistant: {summary}")
    elif transfer.extra.get("briefing"):
        # From a signed URL, Redis down: the summary could not be read.
        texts.append("Incoming transfer from the AI assistant.")
    if transfer.screening:
        texts.append(key_prompt(transfer))
    return texts


def confirm_timeout(transfer: Transfer) -> int:
    """Plivo's confirmTimeout for this transfer: the time to speak the confirmSound,
    estimated slowly (see SPEECH_CHARS_PER_SECOND), plus the whole screening timeout."""
    if transfer.extra.get("confirm_timeout"):
        return int(transfer.extra["confirm_timeout"])  # computed when the summary was known
    texts = briefing_texts(transfer)
    speech = (CONFIRM_SOUND_LATENCY + sum(len(t) for t in texts) / SPEECH_CHARS_PER_SECOND
              + PAUSE_PER_SPEAK * len(texts))
    window = math.ceil(speech) + transfer.screening_timeout
    return min(window, MAX_CONFIRM_TIMEOUT)



def dial_up_xml(settings: Settings, transfer: Transfer, number: str) -> str:
    """The XML Plivo runs on the customer's leg: dial the human. `transfer` is the record
    or a signed context. (Written out rather than through plivoxml: this is the hot path
    of the dial-up, and the SDK's element validation cost more than the rest of it.)"""
    payload = _payload(transfer)
    attrs = [("action", steering_url(settings, DIAL_ACTION_PATH, transfer, payload)),
             ("method", "POST"),
             ("timeout", str(ring_timeout(settings, transfer))),
             ("callerId", transfer.caller_number or transfer.outbound_number)]
    if transfer.summary or transfer.extra.get("briefing") or transfer.screening:
        # Played to the human alone when they answer, before the bridge (a whisper); with
        # screening, they must press the key to take the call.
        attrs.append(("confirmSound", steering_url(settings, WHISPER_PATH, transfer, payload)))
        if transfer.screening:
            attrs += [("confirmKey", screening_key(transfer)),
                      ("confirmTimeout", str(confirm_timeout(transfer)))]
    # The customer waits on this Dial: a ringing tone ("real"), or the template's audio,
    # which Plivo takes only inside an XML document (ours, at HOLD_PATH). Never silence.
    hold = transfer.hold_audio
    attrs += [("dialMusic", steering_url(settings, HOLD_PATH, transfer, payload)
               if hold.startswith("https://") else "real"),
              ("callbackUrl", _url(settings, DIAL_CALLBACK_PATH, transfer)),
              ("callbackMethod", "POST")]
    dial = " ".join(f"{name}={quoteattr(value)}" for name, value in attrs)
    # The destination's extension: "sendDigits: play DTMF tones when the call is answered
    # ... Each w character tells the Plivo API to wait 0.5 seconds" (xml/dial/number).
    digits = transfer.extension()
    number_attrs = f" sendDigits={quoteattr(digits)}" if digits else ""
    # A ring group: "You can use multiple Number elements within a Dial element to
    # simultaneously call multiple numbers. The first call to pick up is connected to the
    # current call and the rest are hung up" (xml/dial/number; the same for User).
    targets = []
    for member in number.split(GROUP_SEPARATOR):
        if is_sip(member):
            # "You can use the User element to specify a SIP endpoint (user) to dial", with
            # sendDigits and sipHeaders (plivo.com/docs/voice/xml/dial/user).
            headers = plivo_sip_headers(transfer)
            attrs_ = number_attrs + (f" sipHeaders={quoteattr(headers)}" if headers else "")
            targets.append(f"<User{attrs_}>{escape(member)}</User>")
        else:
            targets.append(f"<Number{number_attrs}>{escape(member)}</Number>")
    return f"<Response><Dial {dial}>{''.join(targets)}</Dial></Response>"


def plivo_sip_headers(transfer: Transfer) -> str:
    """sipHeaders: "head1=val1,head2=val2 ... always prefixed with X-PH-"; names letters
    and digits only, values letters, digits and '%' "so that you can encode this value in
    a URL" (plivo.com/docs/voice/guides/pass-custom-headers; the User page lists no '%':
    then only the alphanumeric values would pass). So X-Transfer-Summary arrives as
    X-PH-TransferSummary, every other character of a value percent-encoded (UTF-8)."""
    items = []
    for name, value in sip_headers(transfer):
        key = re.sub(r"[^A-Za-z0-9]", "", name.removeprefix("X-"))
        encoded = "".join(c if c.isascii() and c.isalnum() else
                          "".join(f"%{b:02X}" for b in c.encode()) for c in value)
        if key:
            items.append(f"{key}={encoded}")
    return ",".join(items)


def whisper_xml(transfer: Transfer | Mapping[str, str] | None) -> str:
    """What the human hears on answering: the briefing, and the screening prompt."""
    response = plivoxml.ResponseElement()
    for text in briefing_texts(_as_record(transfer)):
        response.add(plivoxml.SpeakElement(text))
    return str(response.to_string(False))


def hold_xml(transfer: Transfer | Mapping[str, str] | None) -> str:
    """The template's hold audio, looped until the Dial ends (Plivo's dialMusic)."""
    response = plivoxml.ResponseElement()
    record = _as_record(transfer)
    hold = record.hold_audio if record else ""
    if hold.startswith("https://"):
        response.add(plivoxml.PlayElement(hold, loop=0))
    else:
        response.add(plivoxml.WaitElement(length=1))
    return str(response.to_string(False))



def resume_xml(settings: Settings) -> str:
    """Back to the AI when the platform gave us a way; else an apology, never silence."""
    response = plivoxml.ResponseElement()
    resume = provider_settings(settings, "plivo", PlivoSettings).resume_url
    if resume:
        response.add(plivoxml.RedirectElement(resume, method="POST"))
    else:
        response.add(plivoxml.SpeakElement(APOLOGY))
        response.add(plivoxml.HangupElement())
    return str(response.to_string(False))


def dial_action_xml(settings: Settings, bridged: bool) -> str:
    """What the customer's call does once the Dial is over: after a bridge, the call is
    over; otherwise (or when we cannot tell) back to the AI."""
    if bridged:
        response = plivoxml.ResponseElement()
        response.add(plivoxml.HangupElement())
        return str(response.to_string(False))
    return resume_xml(settings)



# --- the agent-first handoff (providers.plivo.agent_first) ---------------------------------

AF_ANSWER_PATH = "/plivo/af-answer"
AF_ACCEPT_PATH = "/plivo/af-accept"
AF_JOIN_PATH = "/plivo/af-join"
AF_HANGUP_PATH = "/plivo/af-hangup"
AF_RING_PATH = "/plivo/af-ring"
AF_MACHINE_PATH = "/plivo/af-machine"
AF_CONFERENCE_PATH = "/plivo/af-conference"
AF_LEFT_PATH = "/plivo/af-left"

# What the agent-first steering URLs carry besides the dial-up's context: the detection
# flag (the answer XML waits for detection's verdict when nobody presses a key).
AF_CONTEXT_FIELDS = ("voicemail_detection",)
# Plivo's machine_detection_time we ask for (ms; "Default is 5000 ms", api/call/make-a-call).
MACHINE_DETECTION_MS = 5000
# With detection and no screening nothing but time tells a person from a machine: the
# human's answer XML holds them this long (s) before they may join. Plivo's docs do not say
# when the verdict is posted once detection ends; a second past the detection time is taken.
DETECTION_HOLD = MACHINE_DETECTION_MS // 1000 + 1
GOODBYE = "Thank you. The caller will be looked after."


def af_payload(transfer: Transfer) -> str:
    """The signed context of the agent-first URLs: the dial-up's, and the detection flag."""
    ctx = dial_context(transfer)
    ctx.update({k: "1" for k in AF_CONTEXT_FIELDS if getattr(transfer, k)})
    return base64.urlsafe_b64encode(json.dumps(
        ctx, separators=(",", ":"), sort_keys=True).encode()).rstrip(b"=").decode()


def af_url(settings: Settings, path: str, transfer: Transfer) -> str:
    return steering_url(settings, path, transfer, af_payload(transfer))


def af_status_url(settings: Settings, path: str, transfer: Transfer) -> str:
    """A pure status callback of the agent-first handoff (nothing to sign: no answer steers
    a call)."""
    return _url(settings, path, transfer)


def conference_room(transfer_id: str) -> str:
    """The Plivo conference of a transfer: named after it (account-scoped, xml/conference)."""
    return f"transfer-{transfer_id}"


def human_answer_xml(settings: Settings, transfer: Transfer) -> str:
    """What the human hears on answering (our answer_url): the briefing, then with screening
    the key prompt in a <GetDigits> whose action is ours; without, our accept URL. Either
    way the decision to join comes to us explicitly, never from a timer of Plivo's."""
    accept = af_url(settings, AF_ACCEPT_PATH, transfer)
    response = plivoxml.ResponseElement()
    if transfer.voicemail_detection and not transfer.screening:
        # A machine cannot be told by its key: detection's verdict must come first.
        response.add(plivoxml.WaitElement(length=DETECTION_HOLD))
    texts = briefing_texts(transfer)
    if transfer.screening:
        briefing, prompt = texts[:-1], texts[-1]
        for text in briefing:
            response.add(plivoxml.SpeakElement(text))
        # xml/getdigits: "timeout ... seconds to wait for the first digit", numDigits the
        # most to collect; the digits are posted to `action` as `Digits`.
        digits = plivoxml.GetDigitsElement(
            action=accept, method="POST",
            timeout=transfer.screening_timeout, num_digits=1, retries=1,
            redirect=True)
        digits.add(plivoxml.SpeakElement(prompt))
        response.add(digits)
        # No key at all: GetDigits falls through to the next element; our accept URL then
        # hears it (no Digits) and declines explicitly.
        response.add(plivoxml.RedirectElement(accept, method="POST"))
    else:
        for text in texts:
            response.add(plivoxml.SpeakElement(text))
        response.add(plivoxml.RedirectElement(accept, method="POST"))
    return str(response.to_string(False))


def conference_xml(settings: Settings, transfer: Transfer) -> str:
    """The human's way into the transfer's conference: they wait alone in it (stayAlone)
    while the customer is being moved; their leaving ends it (endConferenceOnExit), and
    with nothing after it their call ends."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.ConferenceElement(
        conference_room(transfer.transfer_id), start_conference_on_enter=True,
        end_conference_on_exit=True, stay_alone=True, enter_sound="", exit_sound="",
        callback_url=af_status_url(settings, AF_CONFERENCE_PATH, transfer),
        callback_method="POST"))
    return str(response.to_string(False))


def customer_join_xml(settings: Settings, transfer: Transfer) -> str:
    """The customer's way into the conference. Never left alone in it: stayAlone false
    (xml/conference: "stayAlone ... End conference if only one member"), and on leaving
    (the human gone) our `action` decides: back to the AI unless the transfer succeeded.
    The worker moves a customer who entered a conference the human had already ended
    (another ConferenceUUID) to the same URL: the docs do not say whether stayAlone ends a
    conference its member enters alone."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.ConferenceElement(
        conference_room(transfer.transfer_id), start_conference_on_enter=True,
        end_conference_on_exit=True, stay_alone=False, enter_sound="", exit_sound="",
        callback_url=af_status_url(settings, AF_CONFERENCE_PATH, transfer),
        callback_method="POST", action=af_url(settings, AF_LEFT_PATH, transfer),
        method="POST", redirect=True))
    return str(response.to_string(False))


def customer_left_xml(settings: Settings, bridged: bool) -> str:
    """The customer out of the conference: over after a bridge (the human hung up); else
    back to the AI (PLIVO_RESUME_URL), or the apology without one, never silence."""
    return dial_action_xml(settings, bridged)


def goodbye_xml() -> str:
    """A declined (or late) human: their leg ends here."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(GOODBYE))
    response.add(plivoxml.HangupElement())
    return str(response.to_string(False))


def hangup_xml() -> str:
    response = plivoxml.ResponseElement()
    response.add(plivoxml.HangupElement())
    return str(response.to_string(False))
