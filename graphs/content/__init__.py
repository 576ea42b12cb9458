"""The content workflow: plan a topic, write a hook, write a body, review, rewrite, finalize."""
