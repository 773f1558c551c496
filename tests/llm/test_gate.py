"""The order in which waiting requests go to a single-slot engine (aiev.llm.gate)."""

from __future__ import annotations

import asyncio

import pytest

from aiev.llm.gate import PrefixGate

TEMPLATES = {step: f"### {step} few-shot template " + step[0] * 400 for step in ("problem", "solve", "explain", "fix")}


def send(gate: PrefixGate, prompts: list[str]) -> list[str]:
    """Queue every prompt while the first holds the only slot; the order the engine would receive them in."""
    sent: list[str] = []

    async def one(text: str) -> None:
        async with gate.slot(text):
            sent.append(text)
            await asyncio.sleep(0)

    async def go() -> None:
        await asyncio.gather(*(one(p) for p in prompts))

    asyncio.run(go())
    return sent


def interleaved(n: int) -> list[str]:
    """``n`` dialogues, each at a different step: what concurrent dialogues ask at one moment."""
    steps = list(TEMPLATES)
    return [TEMPLATES[steps[i % 4]] + f" dialogue {i}" for i in range(n)]


def test_a_freed_slot_goes_to_the_prompt_sharing_the_longest_beginning_with_the_last():
    prompts = interleaved(8)
    sent = send(PrefixGate(1), prompts)
    assert sorted(sent) == sorted(prompts)  # every request sent once
    # after the first (problem, dialogue 0) the other problem request, then one step's requests after another
    steps = [p.split()[1] for p in sent]
    assert steps == ["problem", "problem", "solve", "solve", "explain", "explain", "fix", "fix"]
    fifo = send(PrefixGate(1, order="fifo"), prompts)
    assert fifo == prompts


def test_the_gate_counts_how_much_of_each_prompt_began_like_the_one_before():
    prompts = interleaved(8)
    by_prefix, by_arrival = PrefixGate(1), PrefixGate(1, order="fifo")
    send(by_prefix, prompts)
    send(by_arrival, prompts)
    assert by_prefix.stats.sent == by_arrival.stats.sent == 8
    assert by_prefix.stats.sent_chars == by_arrival.stats.sent_chars == sum(map(len, prompts))
    # fifo: consecutive prompts share only "### "; by prefix: 4 of 8 share their whole template
    assert by_arrival.stats.shared_chars == 7 * len("### ")
    assert by_prefix.stats.shared_chars >= 4 * len(TEMPLATES["solve"])
    assert by_prefix.stats.reordered > 0 and by_arrival.stats.reordered == 0


@pytest.mark.parametrize("order", ["prefix", "fifo"])
def test_a_dialogue_that_asks_again_at_once_keeps_the_engine(order):
    """A's explanation comes back and A asks for its fix at once, a prompt that begins with the one just served:
    by prefix it goes before B and C, who waited, so the engine evaluates only its new end; in arrival order
    it queues behind them."""
    sent: list[str] = []

    async def turn(gate: PrefixGate, text: str) -> None:
        async with gate.slot(text):
            sent.append(text)
            await asyncio.sleep(0)

    async def dialogue(gate: PrefixGate, name: str) -> None:
        explain = TEMPLATES["explain"] + f" dialogue {name}"
        await turn(gate, explain)
        await turn(gate, explain + " explanation ### fix")  # no await in between: it asks in the same turn

    async def go() -> None:
        gate = PrefixGate(1, order=order)
        await asyncio.gather(dialogue(gate, "A"), *(turn(gate, TEMPLATES["explain"] + f" dialogue {n}") for n in "BC"))

    asyncio.run(go())
    names = [p.split("dialogue ")[1][0] + ("+fix" if p.endswith("fix") else "") for p in sent]
    assert names == (["A", "A+fix", "B", "C"] if order == "prefix" else ["A", "B", "C", "A+fix"])


def test_equals_go_in_arrival_order():
    prompts = [TEMPLATES["solve"] + f" dialogue {i}" for i in range(6)]
    assert send(PrefixGate(1), prompts) == prompts


def test_a_request_passed_over_max_skips_times_goes_next():
    """A prompt unlike the rest is not starved by a stream of prompts that match each other."""
    gate = PrefixGate(1, max_skips=3)
    lonely = "something else entirely"
    prompts = [TEMPLATES["fix"] + " a", lonely] + [TEMPLATES["fix"] + f" {i}" for i in range(8)]
    sent = send(gate, prompts)
    assert sent.index(lonely) == 1 + 3  # passed over three times, then sent


def test_slots_bound_the_requests_in_flight():
    gate = PrefixGate(3)
    state = {"now": 0, "most": 0}

    async def one(i: int) -> None:
        async with gate.slot(str(i)):
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            await asyncio.sleep(0.01)
            state["now"] -= 1

    async def go() -> None:
        await asyncio.gather(*(one(i) for i in range(12)))

    asyncio.run(go())
    assert state["most"] == 3 and gate.stats.sent == 12


@pytest.mark.parametrize("when", ["waiting", "granted"])
def test_a_cancelled_request_never_keeps_a_slot(when):
    async def go() -> list[str]:
        gate = PrefixGate(1)
        sent: list[str] = []
        hold = asyncio.Event()

        async def one(text: str, wait: asyncio.Event | None = None) -> None:
            async with gate.slot(text):
                sent.append(text)
                if wait is not None:
                    await wait.wait()

        first = asyncio.ensure_future(one("first", hold))
        await asyncio.sleep(0)
        doomed = asyncio.ensure_future(one("doomed"))
        await asyncio.sleep(0)
        if when == "granted":  # the slot is handed to it, and it is cancelled before it resumes
            hold.set()
            while gate._waiting:
                await asyncio.sleep(0)
            assert not doomed.done()
        doomed.cancel()
        hold.set()
        await first
        await asyncio.gather(doomed, return_exceptions=True)
        await asyncio.wait_for(one("after"), 1.0)  # the slot is free again
        return sent

    sent = asyncio.run(go())
    assert sent == ["first", "after"]  # the cancelled one never ran


def test_an_unknown_order_is_an_error():
    with pytest.raises(ValueError, match="unknown order"):
        PrefixGate(1, order="lifo")
