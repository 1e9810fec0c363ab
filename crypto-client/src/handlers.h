/* The agent's HTTP API (the seed's client API): one handler per route. */
#ifndef AGENT_HANDLERS_H
#define AGENT_HANDLERS_H

#include "m2m/http.h"

void agent_handle_configure(m2m_req *req, void *ctx);
void agent_handle_register(m2m_req *req, void *ctx);
void agent_handle_login(m2m_req *req, void *ctx);
void agent_handle_status(m2m_req *req, void *ctx);
void agent_handle_health(m2m_req *req, void *ctx);
void agent_handle_currencies(m2m_req *req, void *ctx);
void agent_handle_currency(m2m_req *req, void *ctx);
void agent_handle_metrics(m2m_req *req, void *ctx);

#endif
