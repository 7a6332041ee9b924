"""The tunnel's opening exchange, both roles, driven by feeding messages (core.handshake)."""

from __future__ import annotations

import json

import pytest

from jupyter_gpumarket.core import control, market_msgs, paymsgs
from jupyter_gpumarket.core.handshake import Handshake, Opened, State
from jupyter_gpumarket.exceptions import AuthenticationFailed, LinkLost, ProtocolError

CHANNEL = "0x" + "ab" * 32
CHALLENGE = paymsgs.AuthChallenge(
    nonce="0x" + "cd" * 32,
    provider="0x" + "11" * 20,
    chain_id=31337,
    escrow="0x" + "22" * 20,
    ttl=60,
)
ANSWER = paymsgs.AuthAnswer(signature="0x" + "33" * 65)


def _welcome(agent: Handshake, **kw: object) -> tuple[str, int]:
    args = {"lease": "L1", "last_received": 7, "replay_from": 3, "agent": {"kernel_alive": True}}
    return agent.welcome(**{**args, **kw})  # type: ignore[arg-type]


def test_dev_hello_to_welcome_through_both_roles() -> None:
    renter = Handshake.renter(control.Hello(token="t0k"))
    agent = Handshake.agent(paid=False, dev_token="t0k")
    hello = agent.receive_text(renter.start())
    assert isinstance(hello, control.Hello)
    assert agent.state is State.AUTHENTICATED
    text, peer_last = _welcome(agent)
    assert peer_last == 0  # a new lease: replay everything after seq 0
    opened = renter.receive_text(text)
    assert isinstance(opened, Opened)
    assert opened.welcome.lease == "L1"
    assert not opened.adopted
    assert renter.state is agent.state is State.OPEN


def test_paid_hello_goes_through_challenge_and_answer() -> None:
    renter = Handshake.renter(control.Hello(token="", channel=CHANNEL))
    agent = Handshake.agent(paid=True)
    assert isinstance(agent.receive_text(renter.start()), control.Hello)
    assert agent.state is State.CHALLENGING
    challenge = renter.receive_text(agent.send_challenge(CHALLENGE))
    assert challenge == CHALLENGE
    answer = agent.receive_text(renter.answer(ANSWER))
    assert answer == ANSWER
    assert agent.state is State.VERIFYING
    with pytest.raises(ProtocolError, match="handshake bug"):
        _welcome(agent)  # no welcome before the shell verified the answer
    agent.verified()
    assert isinstance(renter.receive_text(_welcome(agent)[0]), Opened)


def test_resume_and_adoption_say_where_replay_starts() -> None:
    agent = Handshake.agent(paid=False, dev_token="t")
    agent.receive_text(control.dump(control.Hello(token="t", lease="L1", last_received=5)))
    assert _welcome(agent)[1] == 5  # resume: after what the renter says it holds
    agent = Handshake.agent(paid=False, dev_token="t")
    agent.receive_text(control.dump(control.Hello(token="t", lease="L1", adopt=True)))
    assert _welcome(agent, replay_from=3)[1] == 2  # adoption: all the agent still keeps


@pytest.mark.parametrize("token", ["", "wrong", "t0k ", "T0K"])
def test_a_wrong_dev_token_is_refused(token: str) -> None:
    agent = Handshake.agent(paid=False, dev_token="t0k")
    with pytest.raises(AuthenticationFailed):
        agent.receive_text(control.dump(control.Hello(token=token)))


def test_a_paid_provider_refuses_a_hello_without_a_channel() -> None:
    with pytest.raises(AuthenticationFailed, match="escrow channel"):
        Handshake.agent(paid=True).receive_text(control.dump(control.Hello(token="x")))


def test_a_dev_provider_without_a_token_refuses_everyone() -> None:
    with pytest.raises(AuthenticationFailed):
        Handshake.agent(paid=False).receive_text(control.dump(control.Hello(token="")))


@pytest.mark.parametrize(
    "first",
    [
        market_msgs.ProbeRequest(nonce="ab" * 16),
        market_msgs.ChallengeRequest(setup={}),
    ],
)
def test_market_requests_leave_the_handshake(first: object) -> None:
    agent = Handshake.agent(paid=False, dev_token="t")
    assert agent.receive_text(control.dump(first)) == first
    assert agent.state is State.ELSEWHERE


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps({"op": "welcome", "lease": "L"}),
        json.dumps({"op": "hello", "token": 5}),
        json.dumps({"op": "hello", "token": "t", "version": 99}),
        json.dumps([1, 2]),
        "{" * 10000,
    ],
)
def test_malformed_first_messages_are_protocol_errors(raw: str) -> None:
    with pytest.raises(ProtocolError):
        Handshake.agent(paid=False, dev_token="t").receive_text(raw)


def test_text_after_the_welcome_or_out_of_turn_is_refused() -> None:
    agent = Handshake.agent(paid=False, dev_token="t")
    agent.receive_text(control.dump(control.Hello(token="t")))
    _welcome(agent)
    with pytest.raises(ProtocolError, match="state open"):
        agent.receive_text(control.dump(control.Hello(token="t")))
    renter = Handshake.renter(control.Hello(token="t"))
    with pytest.raises(ProtocolError, match="handshake bug"):
        renter.answer(ANSWER)  # no challenge came
    with pytest.raises(ProtocolError):
        renter.receive_text(control.dump(CHALLENGE).decode())  # not started


def test_a_dev_renter_takes_a_challenge_for_a_bad_welcome() -> None:
    renter = Handshake.renter(control.Hello(token="t"))
    renter.start()
    with pytest.raises(ProtocolError):
        renter.receive_text(control.dump(CHALLENGE))


def test_a_welcome_for_another_lease_or_an_empty_adopted_lease_is_link_lost() -> None:
    renter = Handshake.renter(control.Hello(token="t", lease="L1"))
    renter.start()
    other = control.Welcome(lease="L2", agent={"kernel_alive": True})
    with pytest.raises(LinkLost, match="another lease"):
        renter.receive_text(control.dump(other))
    renter = Handshake.renter(control.Hello(token="t", lease="L1", adopt=True))
    renter.start()
    empty = control.Welcome(lease="L1", agent={"kernel_alive": False})
    with pytest.raises(LinkLost, match="no kernel"):
        renter.receive_text(control.dump(empty))


def test_a_refusal_ends_the_handshake() -> None:
    agent = Handshake.agent(paid=False, dev_token="t")
    agent.receive_text(control.dump(control.Hello(token="t")))
    assert agent.refused(4003, "full") == (4003, "full")
    assert agent.state is State.REFUSED
    with pytest.raises(ProtocolError, match="handshake bug"):
        _welcome(agent)
