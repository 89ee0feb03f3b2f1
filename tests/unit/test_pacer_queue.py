"""The pacer's queue with an injected clock: order, coalescing, retransmit dedup, give-up,
prefetch detection, retransmits when an answer is overdue, and its bounds."""
from __future__ import annotations

import random
import struct

import dns.message
import dns.rcode
import dns.rrset

from dnscache_agent.pacer.queue import PacerQueue, Priority, QueueLimits
from dnscache_agent.pacer.wire import build_query

NAMED = ("127.0.0.1", 40000)


def query(name: str, qtype: int = 1, qid: int = 1) -> bytes:
    q = build_query(qid, name, qtype)
    assert q is not None
    return q


def answer_for(send_payload: bytes, *, ttl: int = 60, rcode: int = 0,
               address: str = "192.0.2.1") -> bytes:
    """What the resolver answers to the packet the pacer sent."""
    q = dns.message.from_wire(send_payload)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if rcode == 0:
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", address))
    return r.to_wire()


def new_queue(**limits: float) -> PacerQueue:
    return PacerQueue(QueueLimits(**limits), rng=random.Random(1))  # type: ignore[arg-type]


def test_live_before_prefetch_before_warm_and_fifo_within() -> None:
    q = new_queue()
    # a relayed answer about to expire makes the next ask a prefetch
    q.ask(query("pre.example."), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    q.answer(answer_for(q.sent(e, 0.0).payload, ttl=4), 0.01)
    q.mark_warming("warm.example.", 1, 2.0)
    assert q.ask(query("warm.example.", qid=2), NAMED, 2.0) == Priority.WARM
    assert q.ask(query("pre.example.", qid=3), NAMED, 2.0) == Priority.PREFETCH
    assert q.ask(query("live1.example.", qid=4), NAMED, 2.0) == Priority.LIVE
    assert q.ask(query("live2.example.", qid=5), NAMED, 2.0) == Priority.LIVE
    order = []
    while (e := q.pop(2.0)) is not None:
        order.append(e.key[3:].split(b"\x07")[0])
    assert order == [b"live1", b"live2", b"pre", b"warm"]
    assert q.depth() == 0


def test_pop_up_to_leaves_lower_priorities_waiting() -> None:
    q = new_queue()
    q.mark_warming("w.example.", 1, 0.0)
    q.ask(query("w.example."), NAMED, 0.0)
    assert q.pop(0.0, Priority.PREFETCH) is None
    assert q.depth(Priority.WARM) == 1
    assert q.pop(0.0, Priority.WARM) is not None


def test_identical_questions_coalesce_into_one_packet_each_waiter_answered() -> None:
    q = new_queue()
    q.ask(query("www.example.", qid=10), ("127.0.0.1", 1000), 0.0)
    q.ask(query("WWW.Example.", qid=11), ("127.0.0.1", 2000), 0.1)  # another client, case
    assert q.counters.coalesced == 1 and len(q.pending) == 1
    e = q.pop(0.2)
    assert e is not None and q.pop(0.2) is None
    send = q.sent(e, 0.2)
    replies = q.answer(answer_for(send.payload), 0.21)
    assert len(replies) == 2 and q.counters.answers == 1 and q.counters.sent_udp == 1
    by_addr = {addr: dns.message.from_wire(data) for addr, data in replies}
    first, second = by_addr[("127.0.0.1", 1000)], by_addr[("127.0.0.1", 2000)]
    assert first.id == 10 and second.id == 11
    assert str(second.question[0].name) == "WWW.Example."  # each waiter's own case
    assert first.answer and second.answer


def test_a_retransmit_of_the_same_query_adds_nothing() -> None:
    q = new_queue()
    q.ask(query("a.example.", qid=7), NAMED, 0.0)
    q.ask(query("a.example.", qid=7), NAMED, 0.8)  # same port, same ID: a retransmit
    assert q.counters.duplicates == 1 and q.counters.coalesced == 0
    e = q.pop(0.9)
    assert e is not None and len(e.waiters) == 1 and e.last_asked == 0.8


def test_named_retransmits_with_new_ids_share_the_one_upstream_packet() -> None:
    q = new_queue(supersede_after=0.5)
    q.ask(query("a.example.", qid=1), ("127.0.0.1", 5001), 0.0)
    q.ask(query("a.example.", qid=7), ("127.0.0.1", 5007), 0.1)  # a concurrent client
    e = q.pop(0.1)
    assert e is not None
    send = q.sent(e, 0.1)
    q.ask(query("a.example.", qid=2), ("127.0.0.1", 5002), 0.8)  # named's retry
    assert q.pop(0.8) is None and q.counters.sent_udp == 1
    # named abandoned the queries it retransmitted: only the newest is answered (and one
    # from another host would be kept)
    q.ask(query("a.example.", qid=3), ("127.0.0.2", 5003), 0.1)
    replies = q.answer(answer_for(send.payload), 0.81)
    assert sorted(addr for addr, _ in replies) == [("127.0.0.1", 5002), ("127.0.0.2", 5003)]


def test_a_retransmit_crossing_the_answer_is_answered_from_it() -> None:
    q = new_queue(recent_window=1.0)
    q.ask(query("a.example.", qid=1), ("127.0.0.1", 5001), 0.0)
    e = q.pop(0.0)
    assert e is not None
    q.answer(answer_for(q.sent(e, 0.0).payload, address="192.0.2.7"), 0.5)
    assert q.ask(query("A.example.", qid=2), ("127.0.0.1", 5002), 0.9) is None
    [(addr, data)] = q.take_replies()
    reply = dns.message.from_wire(data)
    assert addr == ("127.0.0.1", 5002) and reply.id == 2
    assert str(reply.question[0].name) == "A.example." and "192.0.2.7" in str(reply.answer[0])
    assert q.counters.answered_recent == 1 and q.counters.sent_udp == 1 and not q.pending
    assert q.take_replies() == []
    assert q.ask(query("a.example.", qid=3), NAMED, 1.6) is not None  # too old: upstream


def test_waiting_entries_nobody_asks_for_are_given_up() -> None:
    q = new_queue(give_up_after_ask=4.0, max_age=10.0)
    q.ask(query("gone.example."), NAMED, 0.0)
    q.ask(query("kept.example."), NAMED, 0.0)
    for t in (0.8, 1.6, 2.4, 4.0, 7.2):  # named's retransmit schedule for one question
        q.ask(query("kept.example.", qid=int(t * 10) + 2), NAMED, t)
    e = q.pop(7.5)  # gone: not asked for 7.5 s > 4 s
    assert e is not None and e.key.endswith(b"\x04kept\x07example\x00\x00\x01\x00\x01")
    assert q.counters.expired == 1


def test_entries_older_than_named_fetch_are_dropped_even_if_asked() -> None:
    q = new_queue(give_up_after_ask=4.0, max_age=10.0)
    q.ask(query("old.example."), NAMED, 0.0)
    for t in range(1, 11):
        q.ask(query("old.example.", qid=t + 1), NAMED, float(t))
    assert q.sweep(10.5) == 1 and not q.pending and q.depth() == 0
    assert q.pop(10.5) is None


def test_sweep_also_abandons_in_flight_attempts() -> None:
    q = new_queue(give_up_after_ask=4.0)
    q.ask(query("a.example."), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    send = q.sent(e, 0.0)
    assert q.sweep(4.5) == 1 and not q.by_id
    assert q.answer(answer_for(send.payload), 4.6) == [] and q.counters.unmatched == 1


def test_prefetch_near_expiry_live_before_it_or_after_it() -> None:
    q = new_queue(prefetch_window=3.0)
    q.ask(query("t.example."), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    q.answer(answer_for(q.sent(e, 0.0).payload, ttl=30), 0.0)
    # 20 s before expiry named cannot be prefetching: it lost the answer (or restarted)
    assert q.ask(query("t.example.", qid=9), NAMED, 10.0) == Priority.LIVE
    e = q.pop(10.0)
    assert e is not None
    q.answer(answer_for(q.sent(e, 10.0).payload, ttl=20), 10.0)
    assert q.ask(query("t.example.", qid=2), NAMED, 28.0) == Priority.PREFETCH
    e = q.pop(28.0)
    assert e is not None
    q.answer(answer_for(q.sent(e, 28.0).payload, ttl=30), 28.0)
    assert q.ask(query("t.example.", qid=3), NAMED, 58.5) == Priority.LIVE


def test_negative_answers_expire_by_soa_minimum() -> None:
    q = new_queue()
    q.ask(query("nx.example."), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    send = q.sent(e, 0.0)
    r = dns.message.make_response(dns.message.from_wire(send.payload))
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.authority.append(dns.rrset.from_text("example.", 300, "IN", "SOA",
                                           "ns. host. 1 60 60 600 15"))
    q.answer(r.to_wire(), 0.0)
    assert q.ask(query("nx.example.", qid=2), NAMED, 14.0) == Priority.PREFETCH
    q.pop(14.0)
    q.pending.clear()
    assert q.ask(query("nx.example.", qid=3), NAMED, 16.0) == Priority.LIVE


def test_relayed_memory_is_bounded_least_recently_answered_out() -> None:
    q = new_queue(relayed_max=3)
    for i in range(5):
        q.ask(query(f"n{i}.example.", qid=i + 1), NAMED, 0.0)
        e = q.pop(0.0)
        assert e is not None
        q.answer(answer_for(q.sent(e, 0.0).payload, ttl=4), 0.0)
    assert len(q.relayed) == 3
    assert q.ask(query("n0.example.", qid=9), NAMED, 2.0) == Priority.LIVE  # forgotten
    assert q.ask(query("n4.example.", qid=9), NAMED, 2.0) == Priority.PREFETCH


def test_overdue_answers_are_retransmitted_first_and_late_answers_still_count() -> None:
    q = PacerQueue(QueueLimits(first_retry=1.0), upstreams=2, rng=random.Random(3))
    q.ask(query("slow.example."), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    first = q.sent(e, 0.0)
    q.ask(query("other.example.", qid=2), NAMED, 0.5)
    assert q.requeue_overdue(0.99) == 0
    assert q.next_deadline() == 1.0
    assert q.requeue_overdue(1.0) == 1 and q.counters.upstream_timeouts == 1
    e2 = q.pop(1.0)  # the retransmit goes before the newer question
    assert e2 is e
    again = q.sent(e2, 1.0)
    assert again.retransmit and again.upstream == 1 and again.upstream_id != first.upstream_id
    assert q.counters.retransmits == 1
    assert q.next_deadline() == 3.0  # the retry time doubles
    replies = q.answer(answer_for(first.payload), 1.1)  # the first attempt's late answer
    assert len(replies) == 1 and not any(q.by_id.get(i) for i in (first.upstream_id,
                                                                   again.upstream_id))


def test_answers_to_another_question_or_unknown_id_are_ignored() -> None:
    q = new_queue()
    q.ask(query("a.example."), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    send = q.sent(e, 0.0)
    forged = answer_for(struct.pack("!H", send.upstream_id) + query("b.example.")[2:])
    assert q.answer(forged, 0.0) == []
    assert q.answer(answer_for(query("a.example.", qid=(send.upstream_id + 1) & 0xFFFF)),
                    0.0) == []
    assert q.answer(query("a.example.", qid=send.upstream_id), 0.0) == []  # not a response
    assert q.counters.unmatched == 2 and len(q.pending) == 1


def test_bounds_pending_and_waiters() -> None:
    q = new_queue(max_pending=2, max_waiters=3)
    assert q.ask(query("a.example."), NAMED, 0.0) is not None
    assert q.ask(query("b.example."), NAMED, 0.0) is not None
    assert q.ask(query("c.example."), NAMED, 0.0) is None and q.counters.overflow == 1
    for port in range(5):
        q.ask(query("a.example.", qid=100 + port), ("127.0.0.1", port), 0.1)
    e = q.pop(0.2)
    assert e is not None and len(e.waiters) == 3
    assert [w.qid for w in e.waiters] == [struct.pack("!H", 100 + p) for p in (2, 3, 4)]


def test_not_queries_are_ignored() -> None:
    q = new_queue()
    assert q.ask(b"\x00\x01", NAMED, 0.0) is None
    resp = answer_for(query("a.example."))
    assert q.ask(resp, NAMED, 0.0) is None
    assert q.counters.queries == 0


def test_asked_again_reports_questions_that_cost_a_packet_before() -> None:
    seen: list[tuple[bytes, int]] = []
    q = PacerQueue(on_asked_again=lambda key, qtype: seen.append((key, qtype)))
    q.ask(query("a.example.", qtype=28), NAMED, 0.0)
    e = q.pop(0.0)
    assert e is not None
    q.answer(answer_for(q.sent(e, 0.0).payload), 0.0)
    assert seen == []
    q.ask(query("a.example.", qtype=28, qid=2), NAMED, 100.0)
    assert len(seen) == 1 and seen[0][1] == 28
    q.mark_warming("b.example.", 1, 100.0)  # warm-up asks do not count
    q.ask(query("b.example."), NAMED, 100.0)
    assert len(seen) == 1


def test_waits_are_first_ask_to_first_send() -> None:
    q = new_queue()
    q.ask(query("a.example."), NAMED, 1.0)
    e = q.pop(1.25)
    assert e is not None
    q.sent(e, 1.25)
    assert q.take_waits() == [0.25] and q.take_waits() == []


def test_warm_up_question_gains_live_priority_when_no_longer_warming() -> None:
    q = new_queue(warming_for=10.0)
    q.mark_warming("w.example.", 1, 0.0)
    assert q.ask(query("w.example."), NAMED, 0.0) == Priority.WARM
    q.warming.clear()
    assert q.ask(query("w.example.", qid=2), ("127.0.0.1", 9), 0.5) == Priority.LIVE
    assert q.depth(Priority.LIVE) == 1 and q.depth(Priority.WARM) == 0
    e = q.pop(0.5, Priority.LIVE)
    assert e is not None and e.priority == Priority.LIVE
    assert q.pop(0.5) is None  # the stale warm reference is skipped
