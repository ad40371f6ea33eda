"""The protocol core: every rule of `docs/protocol.md`, without I/O.

`service.ServiceCore` is the service side of one port. It takes what the
socket received, the time and the outcomes of handlers, and says what to
send, which handler to start and which to cancel; the service runner
(`trizmq._service`) is the shell that reads and writes the socket, runs the
handlers in Trio tasks and does what the core says. Nothing here imports
trio or zmq (a test enforces it), so every rule can be driven and checked
without sockets, as a state machine.
"""
