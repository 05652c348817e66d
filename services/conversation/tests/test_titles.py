"""Titles: the question's first words at once, then a model's title after the first exchange (when configured)."""

from __future__ import annotations

from chatbot_contracts import ChatRequest, Completed
from chatbot_contracts.conversations import ConversationPatch, NewConversation, TurnRequest
from chatbot_conversation.events import EventApplier
from chatbot_conversation.service import ConversationService, Principal

ALICE = Principal(owner="alice")


async def test_a_model_titles_the_conversation_after_its_first_exchange(service: ConversationService) -> None:
    asked: list[ChatRequest] = []

    async def enqueue(request: ChatRequest) -> None:
        asked.append(request)

    applier = EventApplier(service, "fast", enqueue)
    made = await service.create(ALICE, NewConversation())
    turn = await service.start_turn(
        ALICE, made.id, TurnRequest(request_id="r1", content="how do I keep basil alive on a windowsill in winter")
    )
    assert (await service.get(ALICE, made.id)).title == "how do I keep basil alive on a…", "the first eight words"
    base = {"request_id": "r1", "model": "fast", "conversation_id": made.id}
    answered = Completed(
        **base, message_id=turn.assistant_message_id, at=1.0, text="More light, less water.", finish_reason="stop",
        key_id="alices-key", budget_period="day",
    )  # fmt: skip
    await applier.apply(answered)
    [request] = asked
    assert (request.purpose, request.model, request.conversation_id, request.owner) == ("title", "fast", made.id, "alice")
    assert (request.key_id, request.budget_period) == ("alices-key", "day"), "charged to the key that made the turn, and its budget"
    assert "basil" in request.messages[-1].content and "More light" in request.messages[-1].content
    await applier.apply(
        Completed(**{**base, "request_id": request.request_id}, purpose="title", at=2.0, text='"Winter Basil Care"\n', finish_reason="stop")
    )
    assert (await service.get(ALICE, made.id)).title == "Winter Basil Care"
    # Later exchanges ask for nothing more.
    second = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r2", content="and mint?"))
    await applier.apply(Completed(**base, message_id=second.assistant_message_id, at=3.0, text="Same.", finish_reason="stop"))
    assert len(asked) == 1


async def test_a_title_the_user_chose_is_never_replaced(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation())
    await service.patch(ALICE, made.id, ConversationPatch(title="Mine"))
    await service.set_generated_title(made.id, "Generated")
    assert (await service.get(ALICE, made.id)).title == "Mine"
