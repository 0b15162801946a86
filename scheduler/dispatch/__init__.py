"""The dispatcher: takes due outbox rows, decides for each whether it may go now, sends it
through its channel at the pace the channel allows, and records what happened.

One round (`Dispatcher.run_once`) is three steps:

1. **Claim and decide**, in one write transaction. Rows are claimed with a lease
   (`scheduler.outbox.claim`, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes
   share the work). Each row then meets the policy, in this order:

   * the member was erased → skipped (`erased`);
   * marketing without consent (never given, or withdrawn by the member's opt-out) → skipped
     (`no_consent`); service and transactional messages do not need marketing consent;
   * no active chat on a configured channel → unreachable (`no_chat`; `no_sender` when the
     member's only chats are on channels this process cannot send on). Staff see these in
     `memberbot outbox status` and follow up by phone;
   * quiet hours in the member's home store's time zone (the chain's zone when the
     member has none): the row is handed back untried, due when the quiet hours end. A rule
     says whether they hold its messages (`context["dispatch"]["quiet_hours"]`, written by
     `scheduler.rules`); without that, transactional messages (a booking the member just
     made) are exempt and the others wait;
   * the marketing cap: a member who already had `marketing_cap` marketing messages in the
     last `marketing_cap_days` days → skipped (`marketing_cap`). Skipped rather than postponed:
     marketing is about a moment (a birthday, this week's offer) and postponed messages
     would pile up and go out together as soon as the window frees, which is what the cap is
     there to prevent. Messages another dispatcher has decided to send but not yet recorded
     count too: the members concerned are locked while deciding (PostgreSQL; SQLite's write
     transaction already admits one decider), so two processes cannot both send the cap's
     last message.

   A row that may go gets its channel (the member's oldest active chat on a channel with a
   sender) and its text (the stored body, or the template rendered now) written on it.

2. **Send**: one lane per chat, lanes concurrently, each lane's messages in order. A `Pacer`
   per channel keeps under the channel's overall rate and its per-chat interval. No send is
   started once the lease is close to running out: those rows are handed back untried.

3. **Record** each outcome as it comes (flushed in small transactions a few times a second):
   SENT → sent; RETRY with the channel's `retry_after` (flood control) → that chat (or, when
   several chats hit it at once, the whole channel) pauses, and the row goes back untried, due
   after the wait; RETRY without one (network, 5xx) → back to the pool after an exponential
   backoff with jitter, until `max_attempts` → failed; BLOCKED → unreachable (`blocked`), the
   chat is unbound (`domain.binding.unbind`, actor `dispatch`; the binding row stays as
   history) so no later message is tried there, and the lane's remaining rows are unreachable
   too; FAILED → failed; WAIT (the channel may carry it only after the member's next action:
   WeChat outside the member's customer-service allowance) → held: back to the pool with
   the reason `waiting_for_member`, due when the wait ends (`hold_days` after the first
   wait, kept in `held_until`). The member's next interaction makes it due at once
   (`domain.allowances.wake`); a row still held when its wait ends is unreachable
   (`no_window`), for staff to phone.

Crash safety comes from the outbox: an unrecorded row stays claimed until its lease runs out
and is then sent again. What can go out twice is therefore at most the batch in flight when a
process dies, and in practice only its last fraction of a second, since outcomes are recorded
continuously.

Rates are per process: several processes sharing one bot token should divide
`telegram_rate_per_second` between them.
"""

from scheduler.dispatch.dispatcher import Dispatcher, buttons_from, default_worker_id
from scheduler.dispatch.pacer import Pacer
from scheduler.dispatch.policy import ChannelLimits, DispatchPolicy, QuietHours
from scheduler.dispatch.recording import DispatchSummary

__all__ = [
    "ChannelLimits",
    "DispatchPolicy",
    "DispatchSummary",
    "Dispatcher",
    "Pacer",
    "QuietHours",
    "buttons_from",
    "default_worker_id",
]
