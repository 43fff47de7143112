"""Server-rendered pages, by who uses them: engineers, labellers, and the team pages."""
