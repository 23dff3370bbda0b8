"""The whole direct-mode flow over HTTP against a live server and the fake OpenAI server:
a message runs an agent, its write_file call waits for the user's approval on the event
stream, the file appears once confirmed, the answer arrives on the stream, and memory
holds the interaction so that a later message retrieves it."""

from __future__ import annotations

from tests.apps.agents.chat_support import PREFIX, LiveAgents, create, session_events
from tests.fakes.openai_server import FakeOpenAI

QUESTION = "Please save a greeting for the lighthouse keeper"


async def test_a_message_runs_the_agent_through_approval_to_an_answer_remembered(
    live_agents: LiveAgents, fake_openai: FakeOpenAI
) -> None:
    ann = await live_agents.account("ann@example.com")
    fake_openai.reply_tool_call(
        "write_file", {"path": "notes/greeting.txt", "content": "Hello, keeper!\n"}
    )
    fake_openai.reply_text("I saved the greeting in notes/greeting.txt.")
    fake_openai.reply_text("Earlier you asked me to save a greeting.")
    fake_openai.reply_text("In another chat you asked me to save a greeting.")

    async with live_agents.http() as http:
        project = await create(http, ann, "/projects", {"name": "Lighthouse"})
        agent = await create(
            http,
            ann,
            "/agents",
            {"name": "scribe", "system_prompt": "You keep notes.", "tools": ["write_file"]},
        )
        chat = await create(http, ann, f"/projects/{project['id']}/sessions", {"title": "Notes"})
        base = f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}"

        async with session_events(http, ann, project["id"], chat["id"]) as events:
            assert (await events.next_of("STREAM_OPENED"))["payload"]["recovered"] is False
            response = await http.post(
                f"{base}/messages",
                json={"content": QUESTION, "target_agent": agent["id"]},
                headers=ann.headers,
            )
            assert response.status_code == 202, response.text
            accepted = response.json()
            task_id = accepted["task"]["id"]
            assert accepted["message"]["content"] == QUESTION

            created = await events.next_of("MESSAGE_CREATED")
            assert created["payload"]["content"] == QUESTION
            assert created["session_id"] == chat["id"]
            call = await events.next_of("DIRECT_AGENT_CALL")
            assert call["payload"]["agent_name"] == "scribe"
            assert (await events.next_of("CONTEXT_RETRIEVED"))["payload"]["count"] == 0
            await events.next_of("TASK_STARTED")
            required = await events.next_of("APPROVAL_REQUIRED")
            assert required["payload"]["tool"] == "write_file"
            assert required["payload"]["risk"] in ("MEDIUM", "HIGH")
            assert required["payload"]["task_id"] == task_id
            workspace = live_agents.workspace(ann, project["id"])
            assert not (workspace / "notes" / "greeting.txt").exists()

            approval_id = required["payload"]["approval_id"]
            response = await http.post(
                f"{PREFIX}/approvals/{approval_id}/confirm", json={}, headers=ann.headers
            )
            assert response.status_code == 200, response.text

            resolved = await events.next_of("APPROVAL_RESOLVED")
            assert resolved["payload"]["status"] == "approved"
            done = await events.next_of("TASK_COMPLETED")
            assert done["payload"]["status"] == "completed"
            assert done["payload"]["content"] == "I saved the greeting in notes/greeting.txt."
            resume_from = done["event_id"]
            assert (workspace / "notes" / "greeting.txt").read_text() == "Hello, keeper!\n"
            for event in events.seen:
                assert set(event) >= {"event_type", "session_id"}
                if event["event_type"] not in ("HEARTBEAT", "STREAM_OPENED"):
                    assert set(event) >= {"payload", "timestamp", "event_id"}

        # The tool result reached the model, and the model saw the tool declared.
        chats = fake_openai.requests_to("/chat/completions")
        assert chats[0].body["tools"][0]["function"]["name"] == "write_file"
        assert any(m["role"] == "tool" for m in chats[1].body["messages"])

        memory = await http.get(
            f"{PREFIX}/agents/{agent['id']}/context",
            params={"project_id": project["id"]},
            headers=ann.headers,
        )
        assert memory.status_code == 200, memory.text
        entries = memory.json()["items"]
        assert [entry["request"] for entry in entries] == [QUESTION]

        # A later message in the same session: the model reads the exchange in the
        # history, once; memory does not repeat it.
        async with session_events(
            http, ann, project["id"], chat["id"], last_event_id=resume_from
        ) as events:
            assert (await events.next_of("STREAM_OPENED"))["payload"]["recovered"] is True
            response = await http.post(
                f"{base}/messages",
                json={"content": "What did I ask you before?", "target_agent": agent["id"]},
                headers=ann.headers,
            )
            assert response.status_code == 202, response.text
            context = await events.next_of("CONTEXT_RETRIEVED")
            assert context["payload"]["count"] == 0
            done = await events.next_of("TASK_COMPLETED")
            assert done["payload"]["content"] == "Earlier you asked me to save a greeting."
        prompt = fake_openai.requests_to("/chat/completions")[-1].body["messages"]
        assert [m["role"] for m in prompt][:2] == ["system", "user"]
        assert sum(QUESTION in (m.get("content") or "") for m in prompt) == 1

        # In another session of the project, memory brings the interaction back.
        other = await create(
            http, ann, f"/projects/{project['id']}/sessions", {"title": "Elsewhere"}
        )
        async with session_events(http, ann, project["id"], other["id"]) as events:
            response = await http.post(
                f"{PREFIX}/projects/{project['id']}/sessions/{other['id']}/messages",
                json={
                    "content": "What did I ask you in the other chat?",
                    "target_agent": agent["id"],
                },
                headers=ann.headers,
            )
            assert response.status_code == 202, response.text
            context = await events.next_of("CONTEXT_RETRIEVED")
            requests = [memory["request"] for memory in context["payload"]["memories"]]
            assert sorted(requests) == sorted([QUESTION, "What did I ask you before?"])
            done = await events.next_of("TASK_COMPLETED")
            assert done["payload"]["content"] == "In another chat you asked me to save a greeting."
        prompt = fake_openai.requests_to("/chat/completions")[-1].body["messages"]
        assert [m["role"] for m in prompt] == ["system", "user", "user"]
        assert "Context from your memory" in prompt[1]["content"]
        assert QUESTION in prompt[1]["content"]

        history = await http.get(f"{base}/messages", headers=ann.headers)
        roles = [item["role"] for item in history.json()["items"]]
        assert roles == ["assistant", "user", "assistant", "user"]
