"""Query side: typed OpenSearch DSL builders and the search service (embed, build, run, explain)."""
