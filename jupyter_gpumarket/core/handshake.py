"""The tunnel's opening exchange, both roles, as one sans-I/O state machine.

A connection starts with text messages before any binary frame: the renter's hello, for a
paid provider a challenge and its signed answer, then the agent's welcome; a relayed channel
opening or a market probe/challenge instead of the hello takes the connection elsewhere. Both
shells (``agent/server.py`` and ``provisioning/link_connect.py``) feed what they read to a
:class:`Handshake` and send what it returns; the checks that decide a connection (dev token,
resumed lease, adoption, where replay starts) live here, not in two copies.

.. code-block:: text

    role    state          input                          -> state          returns
    renter  START          start()                        -> AWAIT_REPLY    hello text
    renter  AWAIT_REPLY    challenge text (paid)          -> CHALLENGED     AuthChallenge
    renter  AWAIT_REPLY    welcome text (dev)             -> OPEN           Opened
    renter  CHALLENGED     answer(AuthAnswer)             -> AWAIT_WELCOME  answer text
    renter  AWAIT_WELCOME  welcome text                   -> OPEN           Opened
    agent   AWAIT_FIRST    relay_open / probe / challenge -> ELSEWHERE      the request
    agent   AWAIT_FIRST    hello, dev, right token        -> AUTHENTICATED  Hello
    agent   AWAIT_FIRST    hello, paid                    -> CHALLENGING    Hello
    agent   CHALLENGING    challenge(AuthChallenge)       -> AWAIT_ANSWER   challenge text
    agent   AWAIT_ANSWER   answer text                    -> VERIFYING      AuthAnswer
    agent   VERIFYING      verified()                     -> AUTHENTICATED  None
    agent   AUTHENTICATED  welcome(...)                   -> OPEN           (text, replay after)
    any     any            refused(code, reason)          -> REFUSED        (code, reason)

Anything else (a welcome before the hello, a second hello, text after OPEN) is a bug in the
shell and raises ProtocolError naming the state; malformed input from the peer raises
ProtocolError (agent: close with CloseCode.PROTOCOL), a wrong token AuthenticationFailed
(close with CloseCode.UNAUTHORIZED), a welcome for another lease or an adoption of a lease
without a kernel LinkLost.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core import control, market_msgs, paymsgs
from jupyter_gpumarket.exceptions import AuthenticationFailed, LinkLost, ProtocolError

__all__ = ["Handshake", "Opened", "Role", "State"]


class Role(enum.Enum):
    RENTER = "renter"
    AGENT = "agent"


class State(enum.Enum):
    START = "start"
    AWAIT_REPLY = "await_reply"
    CHALLENGED = "challenged"
    AWAIT_WELCOME = "await_welcome"
    AWAIT_FIRST = "await_first"
    CHALLENGING = "challenging"
    AWAIT_ANSWER = "await_answer"
    VERIFYING = "verifying"
    AUTHENTICATED = "authenticated"
    ELSEWHERE = "elsewhere"
    OPEN = "open"
    REFUSED = "refused"


@dataclass(frozen=True)
class Opened:
    """The renter's side is open: the welcome, and whether it adopted the agent's numbering."""

    welcome: control.Welcome
    adopted: bool

    @property
    def generation(self) -> int:
        value = self.welcome.agent.get("generation", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1


class Handshake:
    """One connection's opening, as the renter (:meth:`renter`) or the agent (:meth:`agent`)."""

    def __init__(self, role: Role, state: State) -> None:
        self.role = role
        self.state = state
        self.hello: control.Hello | None = None
        self.challenge: paymsgs.AuthChallenge | None = None
        self._paid = False
        self._dev_token = ""
        self._lease: str | None = None

    # -- constructors ----------------------------------------------------------------------
    @classmethod
    def renter(cls, hello: control.Hello) -> Handshake:
        """The renter's side: ``hello`` says which lease it resumes or adopts and, paid, the
        channel (the agent then challenges)."""
        hs = cls(Role.RENTER, State.START)
        hs.hello = hello
        hs._paid = hello.channel is not None
        hs._lease = hello.lease
        return hs

    @classmethod
    def agent(cls, *, paid: bool, dev_token: str | None = None) -> Handshake:
        """The agent's side: ``paid`` providers challenge; dev ones compare ``dev_token``."""
        hs = cls(Role.AGENT, State.AWAIT_FIRST)
        hs._paid = paid
        hs._dev_token = dev_token or ""
        return hs

    # -- renter ----------------------------------------------------------------------------
    def start(self) -> str:
        self._expect(Role.RENTER, State.START)
        assert self.hello is not None
        self.state = State.AWAIT_REPLY
        return control.dump(self.hello).decode()

    def answer(self, answer: paymsgs.AuthAnswer) -> str:
        self._expect(Role.RENTER, State.CHALLENGED)
        self.state = State.AWAIT_WELCOME
        return control.dump(answer).decode()

    # -- agent -----------------------------------------------------------------------------
    def send_challenge(self, challenge: paymsgs.AuthChallenge) -> str:
        self._expect(Role.AGENT, State.CHALLENGING)
        self.challenge = challenge
        self.state = State.AWAIT_ANSWER
        return control.dump(challenge).decode()

    def verified(self) -> None:
        """The shell checked the answer against the channel (a chain read): authenticated."""
        self._expect(Role.AGENT, State.VERIFYING)
        self.state = State.AUTHENTICATED

    def welcome(
        self, *, lease: str, last_received: int, replay_from: int, agent: dict[str, Any]
    ) -> tuple[str, int]:
        """The welcome text and the last seq the renter holds (replay starts after it): an
        adopting renter holds nothing of this lease's numbering, so it gets all still kept."""
        self._expect(Role.AGENT, State.AUTHENTICATED)
        hello = self.hello
        assert hello is not None
        welcome = control.Welcome(
            lease=lease,
            last_received=last_received,
            resumed=hello.lease is not None,
            agent=agent,
            replay_from=replay_from,
        )
        self.state = State.OPEN
        return control.dump(
            welcome
        ).decode(), replay_from - 1 if hello.adopt else hello.last_received

    # -- both --------------------------------------------------------------------------------
    def receive_text(self, raw: str | bytes) -> Any:
        """Feed one text message from the peer; returns what the table says."""
        if self.role is Role.RENTER:
            return self._renter_receives(raw)
        return self._agent_receives(raw)

    def refused(self, code: int, reason: str) -> tuple[int, str]:
        self.state = State.REFUSED
        return code, reason

    # -- internals -----------------------------------------------------------------------------
    def _renter_receives(self, raw: str | bytes) -> paymsgs.AuthChallenge | Opened:
        if self.state is State.AWAIT_REPLY and self._paid:
            self.challenge = control.parse_text(raw, paymsgs.AuthChallenge)
            self.state = State.CHALLENGED
            return self.challenge
        if self.state not in (State.AWAIT_REPLY, State.AWAIT_WELCOME):
            raise ProtocolError(f"a text message from the provider in state {self.state.value}")
        welcome = control.parse_welcome(raw)
        hello = self.hello
        assert hello is not None
        if self._lease is not None and welcome.lease != self._lease:
            raise LinkLost("the provider answered for another lease")
        if hello.adopt and not welcome.agent.get("kernel_alive"):
            raise LinkLost(f"the provider has lease {welcome.lease} but no kernel in it")
        self.state = State.OPEN
        return Opened(welcome, adopted=hello.adopt)

    def _agent_receives(
        self, raw: str | bytes
    ) -> control.Hello | paymsgs.AuthAnswer | paymsgs.RelayOpen | Any:
        if self.state is State.AWAIT_ANSWER:
            answer = control.parse_text(raw, paymsgs.AuthAnswer)
            self.state = State.VERIFYING
            return answer
        if self.state is not State.AWAIT_FIRST:
            raise ProtocolError(f"a text message from the renter in state {self.state.value}")
        first = control.parse_first(raw)
        if isinstance(first, paymsgs.RelayOpen | market_msgs.ProbeRequest):
            self.state = State.ELSEWHERE
            return first
        if isinstance(first, market_msgs.ChallengeRequest):
            self.state = State.ELSEWHERE
            return first
        self.hello = first
        if self._paid:
            if first.channel is None:
                raise AuthenticationFailed(
                    "this provider is paid: open an escrow channel and send its id in the hello"
                )
            self.state = State.CHALLENGING
            return first
        token = self._dev_token
        if not token or not hmac.compare_digest(first.token.encode(), token.encode()):
            raise AuthenticationFailed("wrong dev token")
        self.state = State.AUTHENTICATED
        return first

    def _expect(self, role: Role, state: State) -> None:
        if self.role is not role or self.state is not state:
            raise ProtocolError(
                f"handshake bug: a {role.value} step in state {self.state.value} "
                f"of the {self.role.value}'s handshake"
            )
