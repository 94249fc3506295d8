"""Enqueue (waitUrl parameters, action with QueueResult), Leave, Dial Queue and REST dequeue/redirect."""

from __future__ import annotations

import re

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse


def enqueue_doc(queue: str, **attrs) -> VoiceResponse:
    """A document that enqueues the caller, then says "after enqueue"."""
    response = VoiceResponse()
    response.enqueue(queue, **attrs)
    response.say("after enqueue")
    return response


def say_doc(text: str) -> VoiceResponse:
    """A document that says `text`."""
    response = VoiceResponse()
    response.say(text)
    return response


def test_wait_url_parameters_then_leave(emu, scenario):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait", action="left"))
    polls = []

    def wait(hit):
        polls.append(hit)
        response = VoiceResponse()
        if len(polls) < 2:
            response.say(f"You are number {hit.values['QueuePosition']} in the queue")
        else:
            response.leave()
        return response

    scenario.route("wait", wait)
    scenario.route("left", lambda hit: say_doc("result " + hit.values["QueueResult"]))

    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "say", text="result leave")
    first = polls[0].values
    assert first["QueuePosition"] == "1"
    assert first["CurrentQueueSize"] == "1"
    assert re.fullmatch(r"QU[0-9a-f]{32}", first["QueueSid"])
    assert {"QueueTime", "AvgQueueTime", "MaxQueueSize"} <= set(first)
    assert first["CallSid"] == sid and polls[0].signature_ok
    left = scenario.wait_for("left")[0].values
    assert left["QueueResult"] == "leave"
    assert left["QueueSid"] == first["QueueSid"]
    assert "QueueTime" in left
    # With an action, the action's TwiML replaces what followed <Enqueue>.
    assert "after enqueue" not in [e.get("text") for e in emu.call(sid)["events"]]


def test_leave_without_action_continues_after_enqueue(emu, scenario):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait"))
    response = VoiceResponse()
    response.leave()
    scenario.route("wait", response)
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "say", text="after enqueue")


def test_positions_and_queue_size_for_two_callers(emu, scenario):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait"))
    wait = VoiceResponse()
    wait.pause(length=5)
    scenario.route("wait", wait)
    first = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(first, "queue.wait")
    second = emu.place_call(url=scenario.url("voice"))
    event = emu.wait_for(second, "queue.wait")
    assert (event["position"], event["size"]) == (2, 2)
    hit = scenario.wait_for("wait", where=lambda h: h.values["CallSid"] == second)[0]
    assert (hit.values["QueuePosition"], hit.values["CurrentQueueSize"]) == ("2", "2")
    emu.hangup(first)
    emu.hangup(second)
    emu.wait_until_ended(second)


def test_gather_in_wait_url_can_leave_the_queue(emu, scenario):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait", action="left"))
    wait = VoiceResponse()
    wait.append(Gather(num_digits=1, action="option", timeout=30))
    scenario.route("wait", wait)
    leave = VoiceResponse()
    leave.leave()
    scenario.route("option", leave)
    scenario.route("left", lambda hit: say_doc("we will call you back"))
    sid = emu.place_call(url=scenario.url("voice"), keys=["2"])
    emu.wait_for(sid, "say", text="we will call you back")
    option = scenario.wait_for("option")[0].values
    assert option["Digits"] == "2" and option["QueuePosition"] == "1"
    assert scenario.wait_for("left")[0].values["QueueResult"] == "leave"


def test_caller_hangs_up_in_queue(emu, scenario):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, action="left"))
    scenario.route("left", VoiceResponse())
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "enqueued")
    emu.hangup(sid)
    assert scenario.wait_for("left")[0].values["QueueResult"] == "hangup"
    assert emu.wait_until_ended(sid)["end_reason"] == "caller-hung-up"


def test_dial_queue_bridges_agent_and_caller(emu, scenario):
    queue = scenario.prefix + "-q"
    agent_number = "+447700900201"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait", action="left"))
    wait = VoiceResponse()
    wait.play("hold.mp3", loop=0)
    scenario.route("wait", wait)
    scenario.route("left", lambda hit: say_doc("queue result " + hit.values["QueueResult"]))
    announce = VoiceResponse()
    announce.say("Connecting you to a handler")
    scenario.route("announce", announce)
    agent = VoiceResponse()
    dial = Dial(action="dialled")
    dial.queue(queue, url="announce")
    agent.append(dial)
    scenario.route("agent", agent)
    scenario.route("dialled", VoiceResponse())

    caller = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(caller, "queue.wait")
    agent_sid = emu.place_call(from_=agent_number, url=scenario.url("agent"))

    emu.wait_for(caller, "say", text="Connecting you to a handler")
    emu.wait_for(caller, "bridged", with_sid=agent_sid)
    announce_hit = scenario.wait_for("announce")[0].values
    assert announce_hit["DequeingCallSid"] == agent_sid
    assert announce_hit["CallSid"] == caller
    emu.wait_for(agent_sid, "bridged", with_sid=caller)

    assert emu.say(caller, "I need some help") == [agent_sid]
    emu.wait_for(agent_sid, "heard", text="I need some help")
    emu.say(agent_sid, "I am here")
    emu.wait_for(caller, "heard", text="I am here")

    emu.hangup(agent_sid)
    emu.wait_for(caller, "say", text="queue result bridged")
    dialled = scenario.wait_for("dialled")[0].values
    assert dialled["DialCallStatus"] == "completed"
    assert dialled["DialCallSid"] == caller
    assert scenario.wait_for("left")[0].values["QueueResult"] == "bridged"


def test_dial_queue_times_out_when_nobody_waits(emu, scenario):
    queue = scenario.prefix + "-empty"
    # Create the queue so Dial finds it, then leave it empty.
    park = VoiceResponse()
    park.enqueue(queue, wait_url="leave")
    leave = VoiceResponse()
    leave.leave()
    scenario.route("park", park)
    scenario.route("leave", leave)
    parked = emu.place_call(url=scenario.url("park"))
    emu.wait_until_ended(parked)
    agent = VoiceResponse()
    dial = Dial(action="dialled", timeout=2)
    dial.queue(queue)
    agent.append(dial)
    scenario.route("agent", agent)
    scenario.route("dialled", VoiceResponse())
    emu.place_call(url=scenario.url("agent"))
    assert scenario.wait_for("dialled")[0].values["DialCallStatus"] == "no-answer"


def test_rest_redirect_takes_caller_out_of_the_queue(emu, scenario, twilio):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait", action="left"))
    wait = VoiceResponse()
    wait.pause(length=30)
    scenario.route("wait", wait)
    scenario.route("left", VoiceResponse())
    scenario.route("moved", say_doc("moved out of the queue"))

    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "queue.wait")
    queues = [q for q in twilio.queues.list() if q.friendly_name == queue]
    assert len(queues) == 1 and queues[0].current_size == 1
    members = twilio.queues(queues[0].sid).members.list()
    assert [m.call_sid for m in members] == [sid] and members[0].position == 1

    twilio.calls(sid).update(url=scenario.url("moved"), method="POST")
    emu.wait_for(sid, "say", text="moved out of the queue")
    assert scenario.wait_for("left")[0].values["QueueResult"] == "redirected"
    assert twilio.queues(queues[0].sid).members.list() == []
    assert twilio.queues(queues[0].sid).fetch().current_size == 0


def test_rest_member_dequeue_to_url(emu, scenario, twilio):
    queue = scenario.prefix + "-q"
    scenario.route("voice", enqueue_doc(queue, wait_url="wait"))
    wait = VoiceResponse()
    wait.pause(length=30)
    scenario.route("wait", wait)
    scenario.route("front", say_doc("you were at the front"))
    sid = emu.place_call(url=scenario.url("voice"))
    emu.wait_for(sid, "queue.wait")
    queue_sid = next(q.sid for q in twilio.queues.list() if q.friendly_name == queue)
    member = twilio.queues(queue_sid).members("Front").fetch()
    assert member.call_sid == sid
    twilio.queues(queue_sid).members("Front").update(url=scenario.url("front"), method="POST")
    emu.wait_for(sid, "say", text="you were at the front")
    assert emu.wait_for(sid, "queue.left")["result"] == "redirected"
