"""The conformance cases: what a test does to a transfer and what every provider must show.

A provider that cannot show a case declares it in its `ProviderSpec.conformance_excludes`
(case name -> why); the suite names no provider.
"""

from __future__ import annotations

from dataclasses import dataclass

SUCCEEDED = "transfer.succeeded"
FAILED = "transfer.failed"


@dataclass(frozen=True)
class Case:
    name: str
    # The fate of each destination, in order (sandbox.core.Fate).
    fates: tuple[str, ...]
    type: str
    reason: str | None = None
    # The destination that took the call (`destination_index` of a success).
    index: int | None = None
    # The customer hangs up as soon as the (first) human's leg has been dialed.
    hang_up_while_ringing: bool = False
    # Every callback delivered twice and out of order (a sandbox-wide setting: these cases
    # run together, apart from the others).
    noisy: bool = False


CASES: tuple[Case, ...] = (
    Case("success", ("answer",), SUCCEEDED, index=0),
    Case("busy", ("busy",), FAILED, "busy"),
    Case("no_answer", ("no-answer:0.3",), FAILED, "no_answer"),
    Case("customer_hangs_up_while_ringing", ("answer-after:30",), FAILED, "customer_hung_up",
         hang_up_while_ringing=True),
    Case("fallback", ("busy", "answer"), SUCCEEDED, index=1),
    Case("duplicated_shuffled", ("answer",), SUCCEEDED, index=0, noisy=True),
    Case("duplicated_shuffled_fallback", ("busy", "answer"), SUCCEEDED, index=1, noisy=True),
)

# Not a transfer: every route of the provider's blueprint refuses unsigned requests.
BAD_SIGNATURES = "bad_signatures"

# Not a case but a check of every success: its `destination_index` names the destination
# that took the call (a provider that cannot know it excludes this).
DESTINATION_INDEX = "destination_index"

CASE_NAMES = frozenset({c.name for c in CASES} | {BAD_SIGNATURES, DESTINATION_INDEX})
