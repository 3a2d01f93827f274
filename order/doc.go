// Package order is Orderly's reference workflow: the seed's OrderProcessor
// rebuilt as a statemachine.Definition.
//
// In the seed, OrderProcessor called the payment gateway inside handle_call,
// so a slow gateway blocked the caller and a failure was tangled with the
// transition. Here each client event only moves the order and names an
// action; the worker runs the action after the event is acknowledged and
// feeds its outcome back as an internal event, which goes through the same
// transition table:
//
//	idle             --start_processing-->  processing        fetch_order
//	processing       --order_fetched-->     processing        (stores the order)
//	processing       --request_payment-->   processing        authorize_payment, once the order is fetched
//	processing       --payment_authorized-> awaiting_payment  (stores the payment reference)
//	awaiting_payment --confirm_payment-->   awaiting_payment  capture_payment
//	awaiting_payment --payment_captured-->  completed
//	fetch_failed, authorization_failed, capture_failed and payment_timeout
//	(after Config.PaymentTimeout in awaiting_payment) lead to failed.
//	awaiting_payment --payment_reminder--> awaiting_payment  every Config.PaymentReminder
//	                                                          (counted in Data.Reminders)
//
// Every other (state, event) pair is rejected with invalid_transition.
//
// Action outcome payloads: order_fetched carries Details, payment_authorized
// carries Authorization, and failure events carry {"error":"..."}.
// PaymentGateway is the slow work; SimGateway simulates it.
package order
