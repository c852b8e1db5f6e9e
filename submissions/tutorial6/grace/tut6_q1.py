import numpy as np
import matplotlib.pyplot as plt
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.utils import to_categorical
from tools import *

x = np.linspace(0, 1, 200)
y = x.copy()
y[x < 0.1] = 0
y[x >= 0.1] = 0.5*(x[x >= 0.1] - 0.1)
y[x >= 0.6] = 0.25 - 0.25/0.2*(x[x >= 0.6] - 0.6)
y[x > 0.8] = 0

model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.layers[0].set_weights([np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0])])
model.layers[1].set_weights([np.array([[1], [-1], [1]]), np.array([0])])
y_pred = model.predict(x)
plt.plot(x, y, x, y_pred)

X, y2 = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(units=4, activation='relu', input_dim=2))
model.add(Dense(units=4, activation='relu'))
model.add(Dense(units=2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='sgd')
model.fit(X, to_categorical(y2), epochs=250, batch_size=32, verbose=0)

Xx, yx = gen_xor_distribution(200)
xor = Sequential()
xor.add(Dense(units=8, activation='relu', input_dim=2))
xor.add(Dense(units=8, activation='relu'))
xor.add(Dense(units=2, activation='softmax'))
xor.compile(loss='categorical_crossentropy', optimizer='adam')
xor.fit(Xx, to_categorical(yx), epochs=200, batch_size=32, verbose=0)
