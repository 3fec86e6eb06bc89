"""The Gradio UI: one module per tab. Tabs build typed requests and call services; they hold no engine code."""
