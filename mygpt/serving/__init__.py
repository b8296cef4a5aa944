"""MyGPT over HTTP: OpenAI's API on the batching engine, and a web page to try it."""
