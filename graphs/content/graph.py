"""The content workflow as a LangGraph StateGraph.

plan -> hook -> body -> review -(accepted|rejected)-> finalize
                          ^          |
                          +-rewrite<-+ (while rewrites < max_rewrites)
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from graphs.content.nodes.body import body
from graphs.content.nodes.finalize import finalize
from graphs.content.nodes.hook import hook
from graphs.content.nodes.plan import plan
from graphs.content.nodes.review import review
from graphs.content.nodes.rewrite import rewrite
from graphs.content.state import PostState, WorkflowContext

NODES = ("plan", "hook", "body", "review", "rewrite", "finalize")


def _after_review(state: PostState) -> str:
    return "rewrite" if state.get("verdict") == "rewrite" else "finalize"


def build_content_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    graph = StateGraph(PostState, context_schema=WorkflowContext)
    graph.add_node("plan", plan)
    graph.add_node("hook", hook)
    graph.add_node("body", body)
    graph.add_node("review", review)
    graph.add_node("rewrite", rewrite)
    graph.add_node("finalize", finalize)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "hook")
    graph.add_edge("hook", "body")
    graph.add_edge("body", "review")
    graph.add_conditional_edges("review", _after_review, {"rewrite": "rewrite", "finalize": "finalize"})
    graph.add_edge("rewrite", "review")
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)
