"""The call's session: the model seam (``factory``), the production OpenAI session
(``openai``) and its voice (``voice_options``), the greeting (``greeting``), the
provider's prompt-cache key and cached-token count (``provider_cache``), and what a job
reports about its call (``call_watch``)."""
