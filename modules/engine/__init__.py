"""The generation engine. It never imports gradio or fastapi, and importing it loads nothing heavy."""
