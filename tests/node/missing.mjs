// A model no server has: the error the package raises.
import { client, report } from './common.mjs'

await report(() => client.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }))
