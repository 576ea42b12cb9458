"""The content workflow as a LangGraph StateGraph.

plan -> hook -> body -> review -(accepted|rejected)-> finalize -> END (no account to publish on)
                          ^          |                   |
                          +-rewrite<-+                   +-> schedule -> END   (no approval needed)
                          |                              |
                          |                              +-> await_approval (interrupt: a person)
                          |                                    | approve -> schedule -> END
                          |                                    | reject -> END
                          +----------- revise <----------------+ request_changes
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from graphs.content.nodes.approval import await_approval
from graphs.content.nodes.body import body
from graphs.content.nodes.finalize import finalize
from graphs.content.nodes.hook import hook
from graphs.content.nodes.plan import plan
from graphs.content.nodes.review import review
from graphs.content.nodes.revise import revise
from graphs.content.nodes.rewrite import rewrite
from graphs.content.nodes.schedule import schedule
from graphs.content.state import PostState, WorkflowContext

NODES = ("plan", "hook", "body", "review", "rewrite", "finalize", "await_approval", "revise", "schedule")


def _after_review(state: PostState) -> str:
    return "rewrite" if state.get("verdict") == "rewrite" else "finalize"


def _after_finalize(state: PostState) -> str:
    return {"approval": "await_approval", "schedule": "schedule"}.get(state.get("after_store", "end"), END)


def _after_approval(state: PostState) -> str:
    return {"approve": "schedule", "request_changes": "revise"}.get(state.get("decision", "reject"), END)


def build_content_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    graph = StateGraph(PostState, context_schema=WorkflowContext)
    graph.add_node("plan", plan)
    graph.add_node("hook", hook)
    graph.add_node("body", body)
    graph.add_node("review", review)
    graph.add_node("rewrite", rewrite)
    graph.add_node("finalize", finalize)
    graph.add_node("await_approval", await_approval)
    graph.add_node("revise", revise)
    graph.add_node("schedule", schedule)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "hook")
    graph.add_edge("hook", "body")
    graph.add_edge("body", "review")
    graph.add_conditional_edges("review", _after_review, {"rewrite": "rewrite", "finalize": "finalize"})
    graph.add_edge("rewrite", "review")
    graph.add_conditional_edges(
        "finalize", _after_finalize, {"await_approval": "await_approval", "schedule": "schedule", END: END}
    )
    graph.add_conditional_edges(
        "await_approval", _after_approval, {"schedule": "schedule", "revise": "revise", END: END}
    )
    graph.add_edge("revise", "review")
    graph.add_edge("schedule", END)
    return graph.compile(checkpointer=checkpointer)
